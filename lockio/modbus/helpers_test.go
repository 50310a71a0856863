package modbus

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

// guard bounds every wait for an event, so a broken driver fails the test
// instead of hanging it; it is not a timing assertion.
const guard = modbustest.WaitLimit

type event struct {
	door int
	st   contract.DoorState
}

// startBank starts a bank for doors with fast test timings and returns the
// channel of its reports; the first report of each door (Watch, before any
// poll) is checked to be unknown.
func startBank(t *testing.T, doors ...Door) (*Bank, chan event) {
	t.Helper()
	return startBankWith(t, func(*Config) {}, doors...)
}

// startBankWith is startBank with the test's changes to the configuration.
// Its jam timeout is the guard unless changed: a test that plays a door
// after the pulse must not race the jam detection.
func startBankWith(t *testing.T, change func(*Config), doors ...Door) (*Bank, chan event) {
	t.Helper()
	cfg := Config{
		Doors:        doors,
		Timeout:      2 * time.Second, // generous: python on a busy CI machine
		PulseLength:  100 * time.Millisecond,
		PollInterval: 50 * time.Millisecond,
		RetryMin:     50 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		JamTimeout:   guard,
		Logger:       slog.New(slog.NewTextHandler(modbustest.LogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	change(&cfg)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan event, 10000)
	b.Watch(func(door int, st contract.DoorState) { events <- event{door, st} })
	for range doors {
		e := <-events
		if e.st.State != contract.DoorUnknown {
			t.Fatalf("door %d before any poll: got %q; want %q", e.door, e.st.State, contract.DoorUnknown)
		}
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b, events
}

// await waits for door to report state with a reason containing reason,
// skipping the reports of other doors; a report of door in another state
// first fails the test unless skip lists that state.
func await(t *testing.T, events chan event, door int, state, reason string, skip ...string) contract.DoorState {
	t.Helper()
	timeout := time.After(guard)
	for {
		select {
		case e := <-events:
			if e.door != door {
				continue
			}
			if e.st.State == state && strings.Contains(e.st.Reason, reason) {
				return e.st
			}
			if !contains(skip, e.st.State) {
				t.Fatalf("door %d: got %+v; want state %q, reason containing %q", door, e.st, state, reason)
			}
		case <-timeout:
			t.Fatalf("door %d never reported %q (%q)", door, state, reason)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
