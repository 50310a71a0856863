package store_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/store/storetest"
)

const (
	testKey = "test-locker-code-key-0001"
	grace   = 10 * time.Minute

	// Codes are 12 digits so that a scan of the database file for one of them
	// cannot match a time stamp or an event id by chance.
	dep0, pick0, cour0 = "110000000000", "120000000000", "130000000000"
	dep1, pick1, cour1 = "210000000000", "220000000000", "230000000000"
	dep2, pick2, cour2 = "310000000000", "320000000000", "330000000000"
)

// t0 is the time the tests start at; every store call takes its time from it.
func t0() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

func testLogger(t testing.TB) *slog.Logger { return testenv.QuietLogger(t) }

func testConfig(t testing.TB) store.Config {
	return store.Config{Path: filepath.Join(t.TempDir(), "locky.db"), CodeKey: []byte(testKey), Logger: testLogger(t)}
}

// openTestStore opens a store in a temporary directory, with commits that skip
// fsync; the cleanup closes it and checks the database file.
func openTestStore(t testing.TB, opts ...func(*store.Config)) *store.Store {
	t.Helper()
	cfg := testConfig(t)
	for _, o := range opts {
		o(&cfg)
	}
	return openStore(t, cfg, true)
}

// openStore opens a store at cfg.Path; the cleanup closes it and checks the file.
func openStore(t testing.TB, cfg store.Config, skipFsync bool) *store.Store {
	t.Helper()
	s := storetest.Open(t, cfg)
	if skipFsync {
		store.SkipFsync(s)
	}
	return s
}

// newRes is a new reservation with plain codes.
func newRes(id string, door int, deposit, pickup, courier string) contract.Reservation {
	return contract.Reservation{ID: id, Version: 1, Door: door, DepositCode: deposit, PickupCode: pickup, CourierCode: courier}
}

// acks returns the acks among msgs, decoded.
func acks(t testing.TB, msgs []store.Message) []contract.Ack {
	t.Helper()
	var out []contract.Ack
	for _, m := range msgs {
		if m.Topic != contract.TopicAcks {
			continue
		}
		var a contract.Ack
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			t.Fatalf("ack %s: %v", m.Payload, err)
		}
		out = append(out, a)
	}
	return out
}

// ackOf returns the one ack that a call committed, checking its msg_id.
func ackOf(t testing.TB, msgs []store.Message, err error, msgID string) contract.Ack {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: got error %v; want an ack", msgID, err)
	}
	as := acks(t, msgs)
	if len(as) != 1 {
		t.Fatalf("%s: got %d acks in %s; want exactly 1", msgID, len(as), dump(msgs))
	}
	if as[0].MsgID != msgID {
		t.Fatalf("got ack for %q; want %q", as[0].MsgID, msgID)
	}
	return as[0]
}

// mustOK fails unless a call committed exactly one ok ack.
func mustOK(t testing.TB, msgs []store.Message, err error, msgID string) {
	t.Helper()
	if a := ackOf(t, msgs, err, msgID); !a.OK {
		t.Fatalf("%s: got ack error %q; want ok", msgID, a.Error)
	}
}

// mustReject fails unless a call committed exactly one message, an ack with
// ok:false whose error contains each of wants.
func mustReject(t testing.TB, msgs []store.Message, err error, msgID string, wants ...string) {
	t.Helper()
	a := ackOf(t, msgs, err, msgID)
	if len(msgs) != 1 {
		t.Errorf("%s: got %d messages %s; want only the ack", msgID, len(msgs), dump(msgs))
	}
	if a.OK || a.Error == "" {
		t.Fatalf("%s: got ack %+v; want ok:false with an error", msgID, a)
	}
	for _, w := range wants {
		if !strings.Contains(a.Error, w) {
			t.Errorf("%s: got error %q; want it to contain %q", msgID, a.Error, w)
		}
	}
}

func dump(msgs []store.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "\n  %d %s %s", m.Seq, m.Topic, m.Payload)
	}
	return b.String()
}

// seed gives the locker partners acme and globex, and doors 1 (free), 2
// (allocated to acme), 3 (disabled) and 4 (free).
func seed(t testing.TB, s *store.Store) {
	t.Helper()
	for _, p := range []string{"acme", "globex"} {
		msgs, err := s.UpsertPartner(t0(), "p-"+p, contract.Partner{ID: p})
		mustOK(t, msgs, err, "p-"+p)
	}
	for _, d := range []contract.Door{{ID: 1, Size: "M"}, {ID: 2, Size: "L", Partner: "acme"}, {ID: 3, Size: "S", Disabled: true}, {ID: 4, Size: "M"}} {
		id := fmt.Sprintf("d-%d", d.ID)
		msgs, err := s.UpsertDoor(t0(), id, d)
		mustOK(t, msgs, err, id)
	}
}

// upsert commits a reservation upsert and requires it to be accepted.
func upsert(t testing.TB, s *store.Store, now time.Time, r contract.Reservation) {
	t.Helper()
	id := fmt.Sprintf("u-%s-%d", r.ID, r.Version)
	msgs, err := s.UpsertReservation(now, id, r, grace)
	mustOK(t, msgs, err, id)
}

// runCycle opens a door for a reservation's code and closes it at the same
// time, with the given transition. It returns the close's messages.
func runCycle(t testing.TB, s *store.Store, now time.Time, door int, id, kind string, tr store.Transition) []store.Message {
	t.Helper()
	if _, err := s.DoorOpened(now, store.Cycle{Door: door, Reservation: id, Kind: kind, OpenedAt: now}, nil); err != nil {
		t.Fatalf("DoorOpened: %v", err)
	}
	c, msgs, err := s.CloseCycle(now, door, func(store.Cycle, *store.Reservation) store.Transition { return tr })
	if err != nil || c == nil {
		t.Fatalf("CloseCycle(%d): got %v, %v; want the cycle", door, c, err)
	}
	return msgs
}

// Transitions of a door cycle's close, as the controller decides them.
func toStored() store.Transition {
	return store.Transition{Status: contract.StatusStored, EventType: contract.EventStored}
}

func toDelivered() store.Transition {
	return store.Transition{Status: contract.StatusDelivered, EventType: contract.EventDelivered}
}

func reopened() store.Transition { return store.Transition{EventType: contract.EventReopened} }

// storeState is what a rejected message must leave unchanged.
type storeState struct {
	Reservations []store.Reservation
	Doors        []contract.Door
	Cycles       []store.Cycle
	Codes        map[string]string // code -> "reservation/kind" that LookupCode finds
	Active       map[int]string    // door -> its active reservation
	Outbox       []store.Message
}

func stateOf(t testing.TB, s *store.Store, codes ...string) storeState {
	t.Helper()
	var st storeState
	var err error
	if st.Reservations, err = s.Reservations(); err != nil {
		t.Fatalf("Reservations: %v", err)
	}
	sort.Slice(st.Reservations, func(i, j int) bool { return st.Reservations[i].ID < st.Reservations[j].ID })
	if st.Doors, err = s.Doors(); err != nil {
		t.Fatalf("Doors: %v", err)
	}
	if st.Cycles, err = s.Cycles(); err != nil {
		t.Fatalf("Cycles: %v", err)
	}
	st.Codes = map[string]string{}
	for _, c := range codes {
		st.Codes[c] = lookup(t, s, c)
	}
	st.Active = map[int]string{}
	for _, d := range st.Doors {
		r, err := s.ActiveReservation(d.ID)
		if err != nil {
			t.Fatalf("ActiveReservation(%d): %v", d.ID, err)
		}
		if r != nil {
			st.Active[d.ID] = r.ID
		}
	}
	if st.Outbox, err = s.OutboxAfter(0, 1<<20); err != nil {
		t.Fatalf("OutboxAfter: %v", err)
	}
	return st
}

// lookup returns "reservation/kind" for a code, or "" when no reservation has it.
func lookup(t testing.TB, s *store.Store, code string) string {
	t.Helper()
	r, kind, err := s.LookupCode(code)
	if err != nil {
		t.Fatalf("LookupCode(%q): %v", code, err)
	}
	if r == nil {
		if kind != "" {
			t.Fatalf("LookupCode(%q): got kind %q without a reservation", code, kind)
		}
		return ""
	}
	return r.ID + "/" + kind
}

// sameState fails unless after is before plus the one ack the call committed.
func sameState(t testing.TB, before, after storeState) {
	t.Helper()
	if len(after.Outbox) != len(before.Outbox)+1 {
		t.Errorf("outbox grew from %d to %d messages; want only the ack added", len(before.Outbox), len(after.Outbox))
	} else if !reflect.DeepEqual(before.Outbox, after.Outbox[:len(before.Outbox)]) {
		t.Errorf("outbox changed:\ngot  %s\nwant %s", dump(after.Outbox), dump(before.Outbox))
	}
	before.Outbox, after.Outbox = nil, nil
	if !reflect.DeepEqual(before, after) {
		t.Errorf("state changed:\ngot  %+v\nwant %+v", after, before)
	}
}

// commitLog records what OnCommit receives.
type commitLog struct {
	mu    sync.Mutex
	calls [][]store.Message
}

func (c *commitLog) record(msgs []store.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, append([]store.Message(nil), msgs...))
}

func (c *commitLog) take() [][]store.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = nil
	return out
}

// dropLog records what OnDrop receives.
type dropLog struct {
	mu    sync.Mutex
	calls []string
}

func (d *dropLog) record(reason string, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, fmt.Sprintf("%s:%d", reason, n))
}

func (d *dropLog) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.calls
	d.calls = nil
	return out
}
