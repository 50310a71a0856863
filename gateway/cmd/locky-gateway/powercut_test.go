package main

import (
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

// cutDisk is an ext4 file system on a loop device whose backing file lies on
// a second ext4 file system, itself on a loop device. Freezing the outer file
// system stops every write to the inner device at once: what the inner device
// holds then is what a power cut at that moment leaves on the card. The inner
// file system's page cache (written but not yet synced) is not in it.
type cutDisk struct {
	outerImg, outerMnt, outerDev string
	img, mnt, dev                string // the inner disk: its backing file, where it is mounted, its loop device
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// newCutDisk makes the two file systems in a temporary directory and mounts
// the inner one.
func newCutDisk(t *testing.T) *cutDisk {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the power-cut test makes loop devices and mounts ext4 on them: run it as root (CI does)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "fsfreeze", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install util-linux mount e2fsprogs", tool)
		}
	}
	dir := t.TempDir()
	d := &cutDisk{outerImg: filepath.Join(dir, "outer.img"), outerMnt: filepath.Join(dir, "outer"), mnt: filepath.Join(dir, "card")}
	for _, m := range []string{d.outerMnt, d.mnt} {
		if err := os.Mkdir(m, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "truncate", "-s", "96M", d.outerImg)
	d.outerDev = sh(t, "losetup", "--find", "--show", d.outerImg)
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", d.outerDev).Run() })
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", d.outerDev)
	sh(t, "mount", "-o", "noatime", d.outerDev, d.outerMnt)
	t.Cleanup(func() {
		_ = exec.Command("fsfreeze", "-u", d.outerMnt).Run() // fails when not frozen, as it should be by now
		// The inner loop device, detached just before, may still hold its
		// image for a moment (the kernel releases it asynchronously, later
		// under load): then detach the mount point at once and let the
		// kernel finish, so that the test's temporary dir can be removed.
		if out, err := exec.Command("umount", d.outerMnt).CombinedOutput(); err != nil {
			if lout, lerr := exec.Command("umount", "--lazy", d.outerMnt).CombinedOutput(); lerr != nil {
				t.Errorf("cannot unmount %s: %v: %s; lazily: %v: %s", d.outerMnt, err, out, lerr, lout)
			}
		}
	})
	d.img = filepath.Join(d.outerMnt, "card.img")
	sh(t, "truncate", "-s", "32M", d.img)
	d.attach(t, true)
	return d
}

// attach makes the loop device of the inner disk and mounts it (replaying its
// journal, as the first boot after a power cut does).
func (d *cutDisk) attach(t *testing.T, format bool) {
	t.Helper()
	d.dev = sh(t, "losetup", "--find", "--show", d.img)
	dev := d.dev
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() }) // restore detached all but the last: their error is expected
	if format {
		sh(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", d.dev)
	}
	sh(t, "mount", "-o", "noatime", d.dev, d.mnt)
	t.Cleanup(func() { _ = exec.Command("umount", d.mnt).Run() }) // restore unmounted all but the last: their error is expected
}

// cut stops every write to the inner device, calls acked (everything it
// records was acknowledged before the cut), copies the inner device's content
// to snapshot, kills the gateway and lets the blocked writes go on: they are
// lost, as writes still in a cache are at a power cut.
func (d *cutDisk) cut(p *gatewaytest.Process, snapshot string, acked func()) error {
	if out, err := exec.Command("fsfreeze", "-f", d.outerMnt).CombinedOutput(); err != nil {
		return fmt.Errorf("fsfreeze: %v: %s", err, out)
	}
	acked()
	copyErr := copyFile(snapshot, d.img)
	_ = p.Signal(syscall.SIGKILL) // it dies once its blocked write returns
	if out, err := exec.Command("fsfreeze", "-u", d.outerMnt).CombinedOutput(); err != nil {
		return fmt.Errorf("fsfreeze -u: %v: %s", err, out)
	}
	<-p.Exited()
	return copyErr
}

// restore powers the card back on with the content it had at the cut.
func (d *cutDisk) restore(t *testing.T, snapshot string) {
	t.Helper()
	sh(t, "umount", d.mnt)
	sh(t, "losetup", "-d", d.dev)
	if err := copyFile(d.img, snapshot); err != nil {
		t.Fatal(err)
	}
	d.attach(t, false)
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// progress orders the statuses a reservation goes through in the stream.
var progress = map[string]int{"": 0, contract.StatusArriving: 1, contract.StatusStored: 2, contract.StatusDelivered: 3}

// TestPowerCutLosesNoCommittedChangeAndNoEvent runs the SIGKILL crash test's
// stream of door cycles on a disk that loses power at a random moment: every
// write the disk had not completed then is lost, page cache included. After
// each cut the disk comes back as it was at the cut, the database must pass
// the same checks as after a SIGKILL, and every status change acknowledged
// (its ack or its event received) before the cut must still be there.
func TestPowerCutLosesNoCommittedChangeAndNoEvent(t *testing.T) {
	disk := newCutDisk(t)
	bin := buildGateway(t)
	dataDir := filepath.Join(disk.mnt, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A provisioned key, on the card before the first start, as a
	// production locker's key file is.
	key := make([]byte, 32)
	if _, err := crand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "code.key"), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "sync")
	snapshot := filepath.Join(t.TempDir(), "card-at-cut.img")

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	const reservations, cuts = 72, 10
	status := map[string]string{}
	canariesLost := 0
	for round := 0; round <= cuts; round++ {
		p := startProcess(t, bin, dataDir)
		d, err := connectDriver(p)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		// A new file, written and never synced: a power cut loses it, a
		// SIGKILL would not.
		canary := filepath.Join(dataDir, fmt.Sprintf("canary-%d", round))
		if err := os.WriteFile(canary, []byte(fmt.Sprintf("round %d", round)), 0o600); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex // guards status while a cut reads it
		var atCut map[string]string
		cutErr := make(chan error, 1)
		if round < cuts {
			delay := time.Duration(rng.IntN(300)) * time.Millisecond
			time.AfterFunc(delay, func() {
				cutErr <- disk.cut(p, snapshot, func() {
					mu.Lock()
					atCut = make(map[string]string, len(status))
					for id, s := range status {
						atCut[id] = s
					}
					mu.Unlock()
				})
			})
		}
		steps := 0
	stream:
		for !allDelivered(status, reservations) {
			for i := 0; i < reservations; i++ {
				id := fmt.Sprintf("R%d", i)
				before := status[id]
				next, err2 := d.step(i, before, round)
				mu.Lock()
				status[id] = next
				mu.Unlock()
				if err = err2; err != nil {
					break stream
				}
				if next != before {
					steps++
				}
			}
		}
		t.Logf("round %d: %d steps, then %v", round, steps, err)
		if round == cuts {
			_ = p.Signal(syscall.SIGTERM)
			<-p.Exited()
		} else {
			if err := <-cutErr; err != nil {
				t.Fatalf("power cut: %v", err)
			}
			disk.restore(t, snapshot)
			if b, _ := os.ReadFile(canary); string(b) != fmt.Sprintf("round %d", round) {
				canariesLost++
			}
		}
		status = checkInvariants(t, dataDir) // store.CheckFile first, on the card as the cut left it
		acked := 0
		for id, s := range atCut {
			acked += progress[s]
			if progress[status[id]] < progress[s] {
				t.Errorf("%s was acknowledged %q before the power cut; the card holds %q", id, s, status[id])
			}
		}
		if round < cuts {
			t.Logf("cut %d: the %d status changes acknowledged before it are all on the card", round, acked)
		}
		if t.Failed() {
			t.Fatalf("invariants broken after round %d", round)
		}
		if round == cuts && err != nil {
			t.Fatalf("the last round, without a cut, failed: %v\nthe gateway logged:\n%s\nthe database has:\n%s",
				err, p.Problems(), history(t, dataDir))
		}
	}
	if !allDelivered(status, reservations) {
		t.Fatalf("not every parcel was delivered: %v", status)
	}
	// The cut must drop the page cache, or this test is only the SIGKILL one.
	t.Logf("%d of %d cuts lost the unsynced canary file", canariesLost, cuts)
	if canariesLost == 0 {
		t.Fatalf("no cut lost a file written without fsync: the disk kept its page cache")
	}
}
