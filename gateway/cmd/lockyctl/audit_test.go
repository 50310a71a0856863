package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

func TestAuditOfALocker(t *testing.T) {
	cfg := gatewaytest.Config(t) // dev mode: the code key is in the data dir
	g := gatewaytest.Start(t, cfg)
	c := gatewaytest.Connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, 3, "300001", "300002", "300003"))
	c.Code("300001", "r-1")
	c.Display("r-1", contract.ResultOpened)
	g.SimDoor(t, 3, "close")
	c.Event(contract.EventStored, "R1", 3)
	c.Publish(contract.TopicDownCommands, contract.Command{MsgID: "c-1", Command: contract.CommandOpenDoor, Door: 5, Reason: "ticket 881"})
	if a := c.Ack("c-1"); !a.OK {
		t.Fatalf("ack %+v; want ok", a)
	}

	// A running gateway holds its database.
	code, _, errOut := lockyctl(t, "audit", "--data-dir", cfg.DataDir)
	if code != exitFail || !strings.Contains(errOut, "a running gateway holds it") {
		t.Fatalf("audit of a running gateway: got exit %d, stderr %q; want 1 and an error saying to stop it", code, errOut)
	}

	g.Stop(t)
	code, out, errOut := lockyctl(t, "audit", "--data-dir", cfg.DataDir)
	if code != exitOK {
		t.Fatalf("audit: got exit %d, stderr %q; want 0", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, want := range [][]string{
		{"SEQ", "AT", "DOOR", "KIND", "RESULT", "RESERVATION", "REQUEST", "SEAL", "REASON"},
		{"1", "3", "deposit", "opened", "R1", "r-1", "sealed", "-"},
		{"2", "5", "support", "commanded", "-", "c-1", "sealed", `"ticket 881"`},
	} {
		if !containsLine(lines, want) {
			t.Errorf("audit printed:\n%s\nwant a line with %q", out, want)
		}
	}
	if !strings.Contains(lines[len(lines)-1], "audit trail intact: ") {
		t.Errorf("audit printed:\n%s\nwant it to end saying the trail is intact", out)
	}
	code, out, _ = lockyctl(t, "audit", "--data-dir", cfg.DataDir, "--json")
	var first store.AuditEntry
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &first); code != exitOK || err != nil ||
		first.Seq != 1 || first.Door != 3 || first.Reservation != "R1" || !first.Sealed {
		t.Fatalf("audit --json: got exit %d, first line %+v (%v); want record 1, door 3, R1, sealed", code, first, err)
	}

	// Someone with the SD card edits the first opening: it was door 4.
	editRecord(t, cfg.DataDir, 1, `"door":3`, `"door":4`)
	code, _, errOut = lockyctl(t, "audit", "--data-dir", cfg.DataDir)
	if code != exitFail || !strings.Contains(errOut, "audit record 1 was altered") {
		t.Fatalf("audit of an edited trail: got exit %d, stderr %q; want 1 and an error naming record 1", code, errOut)
	}

	// Without the locker's code key there is nothing to verify against.
	code, _, errOut = lockyctl(t, "audit", "--data-dir", cfg.DataDir, "--code-key-file", filepath.Join(t.TempDir(), "none"))
	if code != exitFail || !strings.Contains(errOut, "--code-key-file") {
		t.Fatalf("audit without the key: got exit %d, stderr %q; want 1 and an error naming --code-key-file", code, errOut)
	}
	if code, _, _ := lockyctl(t, "audit"); code != exitUsage {
		t.Fatalf("audit without --data-dir: got exit %d; want %d", code, exitUsage)
	}
}

// editRecord changes audit record seq in the database of a stopped
// gateway's data dir, as whoever holds its SD card could.
func editRecord(t *testing.T, dataDir string, seq uint64, old, new string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, "locky.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, k := tx.Bucket([]byte("audit")), binary.BigEndian.AppendUint64(nil, seq)
		v := b.Get(k)
		if !bytes.Contains(v, []byte(old)) {
			return fmt.Errorf("audit record %d has no %s", seq, old)
		}
		return b.Put(k, bytes.Replace(v, []byte(old), []byte(new), 1))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestAuditThroughTheCloud asks a running locker for its trail through a
// real Mosquitto, as the back-end would, before and after someone edited a
// record while the locker was stopped.
func TestAuditThroughTheCloud(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	backend := gatewaytest.Connect(t, cloud.Addr, "lockers/L1/up/events")
	cfg := gatewaytest.Config(t)
	cfg.LockerID, cfg.CloudURL = "L1", cloud.URL()
	g := gatewaytest.Start(t, cfg)
	c := gatewaytest.Connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, 3, "300001", "300002", "300003"))
	c.Code("300001", "r-1")
	c.Display("r-1", contract.ResultOpened)
	g.SimDoor(t, 3, "close")
	c.Publish(contract.TopicDownCommands, contract.Command{MsgID: "c-1", Command: contract.CommandOpenDoor, Door: 5, Reason: "ticket 881"})
	if a := c.Ack("c-1"); !a.OK {
		t.Fatalf("ack %+v; want ok", a)
	}
	// Door 5's opening is audited when the door reports open; its closing
	// event comes after that record, so once it is here the trail has 3.
	c.Await(contract.DoorStateTopic(5), func(p []byte) bool { return strings.Contains(string(p), `"open"`) })
	g.SimDoor(t, 5, "close")
	c.Event(contract.EventDoorClosed, "", 5)
	// The bridge drains the outbox once subscribed to the locker's
	// downstream topics: from then on what the back-end sends reaches it.
	backend.Await("lockers/L1/up/events", func(p []byte) bool { return strings.Contains(string(p), contract.EventStored) })

	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return lockyctl(t, append([]string{"--url", cloud.URL(), "--timeout", "15s"}, args...)...)
	}
	code, out, errOut := ctl("audit", "--locker", "L1")
	if code != exitOK {
		t.Fatalf("audit --locker: got exit %d, stderr %q; want 0", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, want := range [][]string{
		{"1", "3", "deposit", "opened", "R1", "r-1", "sealed", "-"},
		{"2", "5", "support", "commanded", "-", "c-1", "sealed", `"ticket 881"`},
		{"3", "5", "support", "opened", "-", "c-1", "sealed", "-"},
	} {
		if !containsLine(lines, want) {
			t.Errorf("audit --locker printed:\n%s\nwant a line with %q", out, want)
		}
	}
	if last := lines[len(lines)-1]; last != "audit trail intact: 3 records, 1 to 3" {
		t.Errorf("audit --locker ended with %q; want it to say the 3 records are intact", last)
	}
	code, out, errOut = ctl("audit", "--locker", "L1", "--after", "1", "--json")
	var rec contract.AuditRecord
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &rec); code != exitOK || err != nil ||
		rec.Seq != 2 || rec.Door != 5 || rec.Reason != "ticket 881" || !rec.Sealed {
		t.Fatalf("audit --after 1 --json: got exit %d, first line %+v (%v), stderr %q; want record 2, door 5, sealed", code, rec, err, errOut)
	}

	// Edited while the locker was stopped: the locker, started again, says so.
	g.Stop(t)
	editRecord(t, cfg.DataDir, 1, `"door":3`, `"door":4`)
	gatewaytest.Start(t, cfg)
	code, out, errOut = ctl("audit", "--locker", "L1")
	if code != exitFail || !strings.Contains(errOut, "locker L1 reports its audit trail broken: audit record 1 was altered") {
		t.Fatalf("audit --locker of an edited trail: got exit %d, stderr %q; want 1 and an error naming record 1", code, errOut)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); !containsLine(lines, []string{"1", "4", "deposit", "opened", "R1", "r-1", "sealed", "-"}) {
		t.Errorf("audit --locker of an edited trail printed:\n%s\nwant record 1 as it now reads (door 4)", out)
	}

	code, _, errOut = lockyctl(t, "--url", cloud.URL(), "--timeout", "200ms", "audit", "--locker", "nobody")
	if code != exitFail || !strings.Contains(errOut, "no audit reply") {
		t.Errorf("audit of a locker that does not answer: got exit %d, stderr %q; want 1 and no audit reply", code, errOut)
	}
	for _, args := range [][]string{
		{"audit", "--locker", "L1", "--data-dir", cfg.DataDir},
		{"audit", "--locker", "L1", "--code-key-file", "code.key"},
		{"audit", "--locker", "L1/x"},
		{"audit", "--data-dir", cfg.DataDir, "--after", "3"},
	} {
		if code, _, _ := lockyctl(t, args...); code != exitUsage {
			t.Errorf("lockyctl %q: got exit %d; want %d", args, code, exitUsage)
		}
	}
}

// containsLine reports whether one of lines has the fields want; a record's
// line is compared without its time, the second field.
func containsLine(lines []string, want []string) bool {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 1 && want[0] != "SEQ" {
			f = append(f[:1], f[2:]...)
		}
		if strings.Join(f, " ") == strings.Join(want, " ") {
			return true
		}
	}
	return false
}
