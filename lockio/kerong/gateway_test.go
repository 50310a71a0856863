package kerong_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/kerong/kerongtest"
)

// The real gateway, its doors on a Kerong board: the door map names locks 1
// and 2 of an 8-channel board at address 0, played by the emulator at the
// far end of a socat pty pair. The emulator plays the doors as a person
// would: an unlock only releases the lock, the test pulls the door open and
// pushes it shut.

const boardAddr = 0

type locker struct {
	g     *gatewaytest.Gateway
	c     *gatewaytest.Client
	emu   *kerongtest.Emulator
	socat *kerongtest.Socat
}

// startLocker starts socat, the emulator and a gateway driving doors 1 and
// 2 through the door map, creates both doors in its store and waits until
// the driver has read them closed.
func startLocker(t *testing.T) *locker {
	t.Helper()
	dir := t.TempDir()
	l := &locker{socat: kerongtest.StartSocat(t, dir), emu: kerongtest.NewEmulator(t, map[byte]int{boardAddr: 8})}
	l.emu.SetManualDoors(true)
	l.emu.Attach(l.socat.B)
	t.Cleanup(l.emu.Detach)

	// Short timings, but a generous response timeout: a loaded test machine
	// must not turn a slow answer into a fault.
	doorMap := filepath.Join(dir, "doors.map")
	text := fmt.Sprintf(`# the emulator's board, on the pty socat made
bus %[1]s timeout=1s
poll-interval 50ms
door 1 kerong %[1]s board=%[2]d lock=1 channels=8
door 2 kerong %[1]s board=%[2]d lock=2 channels=8
`, l.socat.A, boardAddr)
	if err := os.WriteFile(doorMap, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gatewaytest.Config(t)
	cfg.SimDoors = 0
	cfg.DoorMap = doorMap
	cfg.DoorTimeout = 2 * time.Second
	l.g = gatewaytest.Start(t, cfg) // stopped before the emulator and socat: cleanups run last first
	l.c = gatewaytest.Connect(t, l.g.MQTTAddr(), "locky/#")

	// With no simulated doors the store starts with none.
	for _, n := range []int{1, 2} {
		l.c.MustAck("doors", contract.DownMessage{MsgID: fmt.Sprintf("door-%d", n), Op: contract.OpUpsert, Door: &contract.Door{ID: n, Size: "M"}})
	}
	for _, n := range []int{1, 2} {
		l.awaitState(t, n, contract.DoorClosed, "", time.Time{})
	}
	return l
}

// awaitState waits for a state of door, with a reason starting with
// reasonPrefix, reported after the time after.
func (l *locker) awaitState(t *testing.T, door int, state, reasonPrefix string, after time.Time) contract.DoorState {
	t.Helper()
	m := l.c.With(t).Await(contract.DoorStateTopic(door), func(p []byte) bool {
		st, err := contract.DecodeDoorState(p)
		return err == nil && st.State == state && strings.HasPrefix(st.Reason, reasonPrefix) && st.At.After(after)
	})
	st, err := contract.DecodeDoorState(m.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// awaitFaultEvent waits for a door.fault event of door, with no
// reservation, whose reason starts with reasonPrefix.
func (l *locker) awaitFaultEvent(t *testing.T, door int, reasonPrefix string) {
	t.Helper()
	l.c.With(t).Await(contract.TopicEvents, func(p []byte) bool {
		var e contract.Event
		return json.Unmarshal(p, &e) == nil && e.Type == contract.EventDoorFault && e.Door == door &&
			e.Reservation == "" && strings.HasPrefix(e.Reason, reasonPrefix)
	})
}

// pullOpen plays the person at door (lock channel lock) after a code was
// entered with requestID: it waits for the unlock to reach the board, lets
// the driver read the door still shut, requires that the screen has not
// said opened yet, pulls the door open and waits for the screen's opened.
func (l *locker) pullOpen(t *testing.T, requestID string, door, lock int) {
	t.Helper()
	l.emu.AwaitUnlock(t, boardAddr, lock)
	l.emu.AwaitReads(t, boardAddr, 2)
	opened := func(p []byte) bool {
		var d contract.Display
		return json.Unmarshal(p, &d) == nil && d.RequestID == requestID && d.Result == contract.ResultOpened
	}
	if n := l.c.Count(contract.TopicScreenDisplay, opened); n != 0 {
		t.Fatalf("request %s: the screen said opened before the door sensor showed door %d open", requestID, door)
	}
	l.emu.SetOpen(boardAddr, lock, true)
	if d := l.c.With(t).Display(requestID, contract.ResultOpened); d.Door != door {
		t.Fatalf("request %s: opened door %d; want %d", requestID, d.Door, door)
	}
}

func (l *locker) status(t *testing.T, id string) string {
	t.Helper()
	r, err := l.g.Store().Reservation(id)
	if err != nil {
		t.Fatalf("reservation %s: %v", id, err)
	}
	return r.Status
}

func TestGatewayDepositAndPickupOnKerongBoard(t *testing.T) {
	l := startLocker(t)
	c := l.c.With(t)
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, 1, "100001", "100002", "100003"))

	c.Code("100001", "dep")
	l.pullOpen(t, "dep", 1, 1)
	l.emu.SetOpen(boardAddr, 1, false)
	stored := c.Event(contract.EventStored, "R1", 1)
	if got := l.status(t, "R1"); got != contract.StatusStored {
		t.Fatalf("status %q; want stored", got)
	}

	c.Code("100002", "pick")
	l.pullOpen(t, "pick", 1, 1)
	l.emu.SetOpen(boardAddr, 1, false)
	delivered := c.Event(contract.EventDelivered, "R1", 1)
	if delivered.EventID <= stored.EventID {
		t.Fatalf("event ids do not increase: %s then %s", stored.EventID, delivered.EventID)
	}
	if got := l.status(t, "R1"); got != contract.StatusDelivered {
		t.Fatalf("status %q; want delivered", got)
	}
}

func TestGatewayJammedKerongLockKeepsTheCode(t *testing.T) {
	l := startLocker(t)
	c := l.c.With(t)
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R2", 1, 2, "200001", "200002", "200003"))

	l.emu.SetJammed(boardAddr, 2, true)
	c.Code("200001", "r1")
	l.emu.AwaitUnlock(t, boardAddr, 2)
	if d := c.Display("r1", contract.ResultDoorFault); d.Door != 2 {
		t.Fatalf("door_fault for door %d; want 2", d.Door)
	}
	if e := c.Event(contract.EventDoorFault, "R2", 2); !strings.Contains(e.Reason, "jammed") {
		t.Errorf("door.fault reason %q; want the driver's jammed", e.Reason)
	}
	// The driver finds the jam before the controller's door timeout (the
	// gateway sets its jam timeout below it), so one jam is one door.fault.
	l.awaitState(t, 2, contract.DoorFault, "jammed", time.Time{})
	if got := l.status(t, "R2"); got != contract.StatusArriving {
		t.Fatalf("status %q after the jam; want arriving", got)
	}

	l.emu.SetJammed(boardAddr, 2, false)
	c.Code("200001", "r2")
	l.pullOpen(t, "r2", 2, 2)
	l.emu.SetOpen(boardAddr, 2, false)
	c.Event(contract.EventStored, "R2", 2)
	// The controller handles door states in order, so by the stored event
	// any door.fault of the jam's state is out too.
	if n := c.Count(contract.TopicEvents, func(p []byte) bool { return strings.Contains(string(p), contract.EventDoorFault) }); n != 1 {
		t.Errorf("%d door.fault events for one jam; want 1", n)
	}
}

func TestGatewayKerongAdapterUnpluggedAndBack(t *testing.T) {
	l := startLocker(t)
	c := l.c.With(t)

	l.socat.Stop() // unplug
	l.emu.Detach()
	l.awaitFaultEvent(t, 1, "adapter unplugged")
	fault := l.awaitState(t, 1, contract.DoorFault, "adapter unplugged", time.Time{})

	l.socat.Start() // plug back in, same device path
	l.emu.Attach(l.socat.B)
	l.awaitState(t, 1, contract.DoorClosed, "", fault.At)

	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R3", 1, 1, "300001", "300002", "300003"))
	c.Code("300001", "dep")
	l.pullOpen(t, "dep", 1, 1)
	l.emu.SetOpen(boardAddr, 1, false)
	c.Event(contract.EventStored, "R3", 1)
}
