package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// SmallDisk mounts a tmpfs of size (mount's size=, e.g. "2m") on a fresh
// private directory and returns it; it is unmounted when the test ends,
// after the cleanups registered later (a gateway or a store on it) ran. It
// needs root, or CAP_SYS_ADMIN, and says so when the mount fails.
func SmallDisk(t testing.TB, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("cannot mount a %s tmpfs on %s: this test needs root (or CAP_SYS_ADMIN) to have a disk it can fill: %v: %s",
			size, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// FillDisk writes the file path until its file system has no space left
// (ENOSPC, or EDQUOT under a quota); any other write error fails the test.
func FillDisk(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
				t.Fatalf("filling the disk: %v; want ENOSPC in the end", err)
			}
			return
		}
	}
}
