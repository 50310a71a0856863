package kerong

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/goleak"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/kerong/kerongtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type event struct {
	door int
	st   contract.DoorState
}

// rig is a bank on a socat pty pair with an emulator on the other end.
type rig struct {
	t      *testing.T
	socat  *kerongtest.Socat
	emu    *kerongtest.Emulator
	bank   *Bank
	set    *metrics.Set
	events chan event
	queued map[int][]contract.DoorState // events read while waiting for another door
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newRig starts socat, the emulator with the given boards (address →
// channels) and a bank with the given doors, and registers the watcher.
func newRig(t *testing.T, boards map[byte]int, doors map[int]Door, setup func(*kerongtest.Emulator), change ...func(*Config)) *rig {
	t.Helper()
	r := &rig{t: t, events: make(chan event, 4096), queued: map[int][]contract.DoorState{}}
	r.socat = kerongtest.StartSocat(t, t.TempDir())
	r.emu = kerongtest.NewEmulator(t, boards)
	if setup != nil {
		setup(r.emu)
	}
	r.emu.Attach(r.socat.B)
	t.Cleanup(r.emu.Detach)
	for n, d := range doors {
		d.Bus = r.socat.A
		doors[n] = d
	}
	// A generous response timeout: a loaded test machine must not turn a
	// slow answer into a fault.
	r.set = metrics.NewSet()
	cfg := Config{
		Doors:        doors,
		Buses:        map[string]Bus{r.socat.A: {ResponseTimeout: 500 * time.Millisecond}},
		PollInterval: 10 * time.Millisecond,
		MaxBackoff:   80 * time.Millisecond,
		JamTimeout:   150 * time.Millisecond,
		Metrics:      r.set,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, c := range change {
		c(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.bank = b
	b.Watch(func(door int, st contract.DoorState) {
		select {
		case r.events <- event{door, st}:
		default:
			t.Errorf("event buffer full; dropped door %d %v", door, st)
		}
	})
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// next returns the next event of door; other doors' events wait their turn.
func (r *rig) next(door int) contract.DoorState {
	r.t.Helper()
	if q := r.queued[door]; len(q) > 0 {
		r.queued[door] = q[1:]
		return q[0]
	}
	ctx := waitCtx(r.t)
	for {
		select {
		case ev := <-r.events:
			if ev.door == door {
				return ev.st
			}
			r.queued[ev.door] = append(r.queued[ev.door], ev.st)
		case <-ctx.Done():
			r.t.Fatalf("door %d: no event", door)
		}
	}
}

// expect requires door's next event to be state, with a reason starting
// with reasonPrefix.
func (r *rig) expect(door int, state, reasonPrefix string) {
	r.t.Helper()
	st := r.next(door)
	if st.State != state || !strings.HasPrefix(st.Reason, reasonPrefix) {
		r.t.Fatalf("door %d: got %q (%q); want %q (%q…)", door, st.State, st.Reason, state, reasonPrefix)
	}
}

func (r *rig) open(door int) {
	r.t.Helper()
	if err := r.bank.Open(door); err != nil {
		r.t.Fatalf("Open(%d): %v", door, err)
	}
}

// metricAtLeastOne requires the metric (its bus label a %q verb) to be 1
// or more.
func (r *rig) metricAtLeastOne(format string) {
	r.t.Helper()
	name := fmt.Sprintf(format, r.socat.A)
	var buf bytes.Buffer
	r.set.WritePrometheus(&buf)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err != nil || f < 1 {
				r.t.Fatalf("%s: got %q; want 1 or more", name, v)
			}
			return
		}
	}
	r.t.Fatalf("metric %s missing from:\n%s", name, buf.String())
}

func oneBoard() (map[byte]int, map[int]Door) {
	return map[byte]int{1: 8}, map[int]Door{
		1: {Board: 1, Lock: 1, Channels: 8},
		2: {Board: 1, Lock: 2, Channels: 8},
	}
}

func TestOpenThenClosed(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, nil)
	r.expect(1, contract.DoorUnknown, "not read")
	r.expect(2, contract.DoorUnknown, "not read")
	r.expect(1, contract.DoorClosed, "")
	r.expect(2, contract.DoorClosed, "")

	r.open(1)
	r.expect(1, contract.DoorOpen, "")
	r.emu.SetOpen(1, 1, false) // a person pushes it shut
	r.expect(1, contract.DoorClosed, "")
}

func TestDoorAlreadyOpen(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, func(e *kerongtest.Emulator) { e.SetOpen(1, 1, true) })
	r.expect(1, contract.DoorUnknown, "")
	r.expect(1, contract.DoorOpen, "")

	r.open(1) // already open: nothing to report, and no jam
	r.emu.AwaitUnlock(t, 1, 1)
	r.emu.SetOpen(1, 1, false)
	r.expect(1, contract.DoorClosed, "")
}

func TestTimeoutFaultRecovers(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, nil)
	r.expect(1, contract.DoorUnknown, "")
	r.expect(1, contract.DoorClosed, "")

	r.emu.SetSilent(1, true)
	r.expect(1, contract.DoorFault, "timeout")
	r.metricAtLeastOne(`locky_kerong_errors_total{bus=%q,kind="timeout"}`)
	r.metricAtLeastOne(`locky_kerong_boards_unreachable{bus=%q}`)
	r.emu.SetSilent(1, false)
	r.expect(1, contract.DoorClosed, "")
}

func TestChecksumFaultRecovers(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, nil)
	r.expect(2, contract.DoorUnknown, "")
	r.expect(2, contract.DoorClosed, "")

	r.emu.SetCorrupt(1, true)
	r.expect(2, contract.DoorFault, "checksum")
	r.emu.SetCorrupt(1, false)
	r.expect(2, contract.DoorClosed, "")
}

// TestOneBadChecksumIsRetried: one answer damaged by noise is retried at the
// next poll, no door turns fault; an unlock whose answer is damaged is sent
// once more and the door opens.
func TestOneBadChecksumIsRetried(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, nil)
	for _, d := range []int{1, 2} {
		r.expect(d, contract.DoorUnknown, "")
		r.expect(d, contract.DoorClosed, "")
	}

	r.emu.CorruptNext(1, 1)
	r.emu.AwaitReads(t, 1, 2) // the damaged answer and the next one
	r.metricAtLeastOne(`locky_kerong_errors_total{bus=%q,kind="checksum"}`)
	r.emu.SetOpen(1, 2, true)
	r.expect(2, contract.DoorOpen, "") // not a fault first

	r.emu.CorruptNextUnlocks(1, 1)
	r.open(1)
	r.emu.AwaitUnlock(t, 1, 1)
	r.emu.AwaitUnlock(t, 1, 1) // the second try
	r.expect(1, contract.DoorOpen, "")
}

// TestAnUnlockWhoseAnswersAreLostFaultsNoDoor: with FaultAfter 1, the board
// releases the lock but both answers (the unlock and its second try) are
// damaged. The door opens, and neither it nor its neighbour turns fault
// first: a fault would make the controller end the cycle of a door that is
// opening.
func TestAnUnlockWhoseAnswersAreLostFaultsNoDoor(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, nil, func(c *Config) { c.FaultAfter = 1 })
	for _, d := range []int{1, 2} {
		r.expect(d, contract.DoorUnknown, "")
		r.expect(d, contract.DoorClosed, "")
	}
	r.emu.CorruptNextUnlocks(1, 2)
	r.open(1)
	r.emu.AwaitUnlock(t, 1, 1)
	r.emu.AwaitUnlock(t, 1, 1)
	r.expect(1, contract.DoorOpen, "")
	r.emu.SetOpen(1, 2, true)
	r.expect(2, contract.DoorOpen, "")
}

func TestJammedLock(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, func(e *kerongtest.Emulator) { e.SetJammed(1, 1, true) })
	r.expect(1, contract.DoorUnknown, "")
	r.expect(1, contract.DoorClosed, "")

	r.open(1)
	r.expect(1, contract.DoorFault, "jammed")
	r.emu.SetJammed(1, 1, false)
	r.open(1)
	r.expect(1, contract.DoorOpen, "")
}

func TestAdapterUnpluggedAndBack(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, nil)
	r.expect(1, contract.DoorUnknown, "")
	r.expect(1, contract.DoorClosed, "")

	r.socat.Stop() // unplug
	r.emu.Detach()
	for {
		st := r.next(1)
		if st.State != contract.DoorFault {
			t.Fatalf("door 1: got %q (%q); want a fault", st.State, st.Reason)
		}
		if strings.HasPrefix(st.Reason, kindUnplugged) {
			break
		}
	}
	r.socat.Start() // plug back in, same device path
	r.emu.Attach(r.socat.B)
	r.expect(1, contract.DoorClosed, "")
	r.open(1)
	r.expect(1, contract.DoorOpen, "")
}

func TestTwoBoardsOneBus(t *testing.T) {
	r := newRig(t, map[byte]int{0: 8, 31: 48}, map[int]Door{
		1: {Board: 0, Lock: 1, Channels: 8},
		2: {Board: 31, Lock: 48, Channels: 48},
		3: {Board: 31, Lock: 9, Channels: 48},
	}, nil)
	for d := 1; d <= 3; d++ {
		r.expect(d, contract.DoorUnknown, "")
		r.expect(d, contract.DoorClosed, "")
	}
	r.open(2)
	r.expect(2, contract.DoorOpen, "")
	r.emu.SetOpen(31, 9, true)
	r.expect(3, contract.DoorOpen, "")

	r.emu.SetSilent(0, true) // one board down, the other still served
	r.expect(1, contract.DoorFault, "timeout")
	r.emu.SetOpen(31, 48, false)
	r.expect(2, contract.DoorClosed, "")
	r.emu.SetSilent(0, false)
	r.expect(1, contract.DoorClosed, "")
}

func TestOpenErrors(t *testing.T) {
	b, err := New(Config{Doors: map[int]Door{1: {Bus: "/dev/null-kerong", Board: 0, Lock: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Open(1); err != ErrNotStarted {
		t.Fatalf("Open before Start: got %v; want %v", err, ErrNotStarted)
	}
	if err := b.Open(7); err == nil || !strings.Contains(err.Error(), "door 7") {
		t.Fatalf("Open(7): got %v; want an error naming door 7", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Bank fits the door handler's Driver (handlers/door), named here by shape
// so that a driver's package does not import a handler.
var _ interface {
	Open(door int) error
	Watch(report func(door int, st contract.DoorState))
} = (*Bank)(nil)

// TestAnUnlockThatWaitedTooLongIsDropped: an unlock that waited for its bus
// past OpenWait (a silent board before it, an adapter that was gone) is not
// sent: the door would open after the controller told the customer it did
// not. The one behind it, fresh, is.
func TestAnUnlockThatWaitedTooLongIsDropped(t *testing.T) {
	boards, doors := oneBoard()
	r := newRig(t, boards, doors, nil)
	r.expect(1, contract.DoorUnknown, "not read")
	r.expect(1, contract.DoorClosed, "")
	r.expect(2, contract.DoorUnknown, "not read")
	r.expect(2, contract.DoorClosed, "")

	bs := r.bank.buses[0]
	bs.opens <- openReq{d: r.bank.doors[1], at: time.Now().Add(-time.Hour)} // as if queued an hour ago
	r.open(2)
	r.emu.AwaitUnlock(t, 1, 2)
	r.expect(2, contract.DoorOpen, "")
	r.metricAtLeastOne(`locky_kerong_opens_dropped_total{bus=%q}`)
	var buf bytes.Buffer
	r.set.WritePrometheus(&buf)
	if want := fmt.Sprintf(`locky_kerong_frames_sent_total{bus=%q,kind="unlock"} 1`, r.socat.A); !strings.Contains(buf.String(), want+"\n") {
		t.Errorf("unlock frames sent: want only the fresh one (%s) in\n%s", want, buf.String())
	}
}
