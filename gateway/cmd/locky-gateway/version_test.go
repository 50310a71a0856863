package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionNamesTheCommit: a plain build in a checkout, without -ldflags,
// says which commit it was built from, so an operator can tell two binaries
// apart (it printed "dev unknown").
func TestVersionNamesTheCommit(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v (the test runs in a git checkout)", err)
	}
	bin := filepath.Join(t.TempDir(), "locky-gateway")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	got := strings.Fields(string(out))
	want := strings.TrimSpace(string(head))
	if len(got) != 3 || got[0] != "locky-gateway" || !strings.HasPrefix(got[2], want) {
		t.Fatalf("--version printed %q; want locky-gateway, a version and the commit %s", out, want)
	}
}
