package store_test

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// eventsOf decodes the events among msgs.
func eventsOf(t testing.TB, msgs []store.Message) []contract.Event {
	t.Helper()
	var out []contract.Event
	for _, m := range msgs {
		if m.Topic != contract.TopicEvents {
			continue
		}
		var ev contract.Event
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Fatalf("event %s: %v", m.Payload, err)
		}
		out = append(out, ev)
	}
	return out
}

func TestCloseCycle(t *testing.T) {
	var commits commitLog
	s := openTestStore(t, func(c *store.Config) { c.OnCommit = commits.record })
	seed(t, s)
	upsert(t, s, t0(), newRes("R1", 1, dep0, pick0, cour0))
	commits.take()

	opened := t0().Add(time.Minute)
	c := store.Cycle{Door: 1, Reservation: "R1", Kind: contract.KindDeposit, RequestID: "r-1", OpenedAt: opened}
	msgs, err := s.DoorOpened(opened, c, nil)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("DoorOpened: got %s, %v; want no messages", dump(msgs), err)
	}
	if got := commits.take(); len(got) != 0 {
		t.Fatalf("OnCommit got %d calls for a commit without messages; want none", len(got))
	}
	if cs, err := s.Cycles(); err != nil || len(cs) != 1 || !reflect.DeepEqual(cs[0], c) {
		t.Fatalf("Cycles: got %+v, %v; want [%+v]", cs, err, c)
	}

	closed := t0().Add(2 * time.Minute)
	calls := 0
	done, msgs, err := s.CloseCycle(closed, 1, func(got store.Cycle, r *store.Reservation) store.Transition {
		calls++
		if !reflect.DeepEqual(got, c) || r == nil || r.ID != "R1" || r.Status != contract.StatusArriving {
			t.Errorf("decide got %+v, %+v; want the cycle and R1 arriving", got, r)
		}
		return toStored()
	})
	if err != nil || done == nil || !reflect.DeepEqual(*done, c) || calls != 1 {
		t.Fatalf("CloseCycle: got %+v, %v after %d decisions; want the cycle after 1", done, err, calls)
	}
	evs := eventsOf(t, msgs)
	want := contract.Event{EventID: store.EventID(msgs[0].Seq), Type: contract.EventStored, Reservation: "R1", Door: 1,
		Status: contract.StatusStored, CodeKind: contract.KindDeposit, At: closed}
	if len(msgs) != 1 || len(evs) != 1 || !reflect.DeepEqual(evs[0], want) {
		t.Fatalf("CloseCycle messages: got %s; want one event %+v", dump(msgs), want)
	}
	// The status change and its event are one commit.
	if got := commits.take(); len(got) != 1 || !reflect.DeepEqual(got[0], msgs) {
		t.Fatalf("OnCommit: got %d calls %v; want one with %s", len(got), got, dump(msgs))
	}
	r, err := s.Reservation("R1")
	if err != nil {
		t.Fatalf("Reservation: %v", err)
	}
	if r.Status != contract.StatusStored || !r.UpdatedAt.Equal(closed) || !r.Codes["deposit"].UsedAt.Equal(closed) ||
		!r.Codes["pickup"].UsedAt.IsZero() || !r.Codes["courier"].UsedAt.IsZero() {
		t.Fatalf("got %+v; want R1 stored with only its deposit code used at %v", r, closed)
	}
	if cs, err := s.Cycles(); err != nil || len(cs) != 0 {
		t.Fatalf("Cycles after close: got %+v, %v; want none", cs, err)
	}
	if a, err := s.ActiveReservation(1); err != nil || a == nil || a.ID != "R1" {
		t.Fatalf("ActiveReservation(1): got %+v, %v; want R1", a, err)
	}

	// A door without a cycle: nothing happens, decide is not asked.
	done, msgs, err = s.CloseCycle(closed, 1, func(store.Cycle, *store.Reservation) store.Transition {
		t.Error("decide called for a door without a cycle")
		return store.Transition{}
	})
	if done != nil || msgs != nil || err != nil {
		t.Fatalf("second CloseCycle: got %+v, %s, %v; want nil, nil, nil", done, dump(msgs), err)
	}

	// The courier code reopens: status unchanged; a reused code keeps its first used time.
	runCycle(t, s, t0().Add(3*time.Minute), 1, "R1", contract.KindCourier, reopened())
	msgs = runCycle(t, s, t0().Add(4*time.Minute), 1, "R1", contract.KindDeposit, reopened())
	if evs := eventsOf(t, msgs); len(evs) != 1 || evs[0].Type != contract.EventReopened || evs[0].Status != contract.StatusStored {
		t.Fatalf("reopen events: got %+v; want one reservation.reopened, status stored", evs)
	}
	r, _ = s.Reservation("R1")
	if !r.Codes["deposit"].UsedAt.Equal(closed) || !r.Codes["courier"].UsedAt.Equal(t0().Add(3*time.Minute)) {
		t.Fatalf("got used times %v, %v; want %v, %v", r.Codes["deposit"].UsedAt, r.Codes["courier"].UsedAt, closed, t0().Add(3*time.Minute))
	}

	// Pickup: delivered, the door is free.
	runCycle(t, s, t0().Add(5*time.Minute), 1, "R1", contract.KindPickup, toDelivered())
	if a, err := s.ActiveReservation(1); err != nil || a != nil {
		t.Fatalf("ActiveReservation(1) after delivery: got %+v, %v; want none", a, err)
	}
	// The used codes stay findable for their grace period.
	if got := lookup(t, s, pick0); got != "R1/pickup" {
		t.Fatalf("LookupCode(pick0): got %q; want %q", got, "R1/pickup")
	}

	// A support cycle has no reservation: its close is a door.closed event.
	if _, err := s.DoorOpened(t0(), store.Cycle{Door: 4, Kind: store.KindSupport, OpenedAt: t0()}, nil); err != nil {
		t.Fatalf("DoorOpened: %v", err)
	}
	_, msgs, err = s.CloseCycle(t0().Add(6*time.Minute), 4, func(store.Cycle, *store.Reservation) store.Transition {
		t.Error("decide called for a cycle without a reservation")
		return store.Transition{}
	})
	if evs := eventsOf(t, msgs); err != nil || len(evs) != 1 || evs[0].Type != contract.EventDoorClosed || evs[0].Door != 4 || evs[0].CodeKind != store.KindSupport {
		t.Fatalf("support close: got %+v, %v; want one door.closed for door 4", evs, err)
	}
}

// A used code stays valid for its grace period; once that is over another
// reservation may take it. Reopening the first reservation's door with one of
// its other codes, still in grace, must not take the code back.
func TestCloseCycleKeepsCodesTakenOver(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	prepDelivered(t, s) // R0 in door 1: deposit used at t0+10m, pickup at t0+55m
	upsert(t, s, t0().Add(56*time.Minute), newRes("R1", 4, dep0, pick1, cour1))
	if got := lookup(t, s, dep0); got != "R1/deposit" {
		t.Fatalf("LookupCode(dep0): got %q; want %q", got, "R1/deposit")
	}
	runCycle(t, s, t0().Add(58*time.Minute), 1, "R0", contract.KindPickup, reopened())
	if got := lookup(t, s, dep0); got != "R1/deposit" {
		t.Fatalf("LookupCode(dep0) after R0's door reopened: got %q; want %q", got, "R1/deposit")
	}
	if got := lookup(t, s, pick0); got != "R0/pickup" {
		t.Fatalf("LookupCode(pick0): got %q; want %q", got, "R0/pickup")
	}
}

func TestDoorOpenedSurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg, false)
	seed(t, s)
	upsert(t, s, t0(), newRes("R1", 1, dep0, pick0, cour0))
	c := store.Cycle{Door: 1, Reservation: "R1", Kind: contract.KindDeposit, RequestID: "r-1", OpenedAt: t0()}
	ev := contract.Event{Type: contract.EventForcedOpen, Door: 1}
	msgs, err := s.DoorOpened(t0(), c, &ev)
	if err != nil || len(eventsOf(t, msgs)) != 1 {
		t.Fatalf("DoorOpened: got %s, %v; want its event", dump(msgs), err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openStore(t, cfg, false)
	cs, err := s.Cycles()
	if err != nil || len(cs) != 1 || !reflect.DeepEqual(cs[0], c) {
		t.Fatalf("Cycles after reopening: got %+v, %v; want [%+v]", cs, err, c)
	}
	out, err := s.OutboxAfter(0, 100)
	if err != nil {
		t.Fatalf("OutboxAfter: %v", err)
	}
	if evs := eventsOf(t, out); len(evs) != 1 || evs[0].Type != contract.EventForcedOpen || evs[0].EventID != store.EventID(msgs[0].Seq) {
		t.Fatalf("outbox after reopening: got %+v; want the door.forced_open event", evs)
	}
	audit, err := s.Audit(10)
	want := store.AuditRecord{At: t0(), Door: 1, Reservation: "R1", Kind: contract.KindDeposit, Result: contract.ResultOpened, RequestID: "r-1"}
	if err != nil || len(audit) != 1 || !reflect.DeepEqual(audit[0], want) {
		t.Fatalf("Audit: got %+v, %v; want [%+v]", audit, err, want)
	}
	// The cycle completes after the restart.
	done, _, err := s.CloseCycle(t0().Add(time.Minute), 1, func(store.Cycle, *store.Reservation) store.Transition { return toStored() })
	if err != nil || done == nil {
		t.Fatalf("CloseCycle after reopening: got %+v, %v", done, err)
	}
	if r, _ := s.Reservation("R1"); r == nil || r.Status != contract.StatusStored {
		t.Fatalf("got %+v; want R1 stored", r)
	}
}

func TestAppendEventIDs(t *testing.T) {
	s := openTestStore(t)
	var last contract.Event
	var lastSeq uint64
	for i := range 25 {
		now := t0().Add(time.Duration(i) * time.Second)
		var a *store.AuditRecord
		if i%5 == 0 {
			a = &store.AuditRecord{At: now, Door: i, Kind: store.KindSupport, Result: "commanded"}
		}
		ev, msgs, err := s.AppendEvent(now, contract.Event{Type: contract.EventLockout, RetryAfterS: i}, a)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("AppendEvent: got %s, %v; want one message", dump(msgs), err)
		}
		if len(ev.EventID) != 16 {
			t.Fatalf("got event id %q; want 16 digits", ev.EventID)
		}
		n, err := strconv.ParseUint(ev.EventID, 10, 64)
		if err != nil || n != msgs[0].Seq {
			t.Fatalf("got event id %q for sequence %d", ev.EventID, msgs[0].Seq)
		}
		if i > 0 && (n <= lastSeq || ev.EventID <= last.EventID) {
			t.Fatalf("event id %q follows %q; want it above, as a number and as a string", ev.EventID, last.EventID)
		}
		if !ev.At.Equal(now) {
			t.Fatalf("got at %v; want %v", ev.At, now)
		}
		if got := eventsOf(t, msgs); !reflect.DeepEqual(got[0], ev) {
			t.Fatalf("committed %+v; returned %+v", got[0], ev)
		}
		last, lastSeq = ev, n
	}
	if seq, err := s.LastSeq(); err != nil || seq != lastSeq {
		t.Fatalf("LastSeq: got %d, %v; want %d", seq, err, lastSeq)
	}
	audit, err := s.Audit(3)
	if err != nil || len(audit) != 3 || audit[0].Door != 10 || audit[2].Door != 20 {
		t.Fatalf("Audit(3): got %+v, %v; want the last three records, doors 10, 15, 20", audit, err)
	}
	// An event that carries its own time keeps it.
	at := t0().Add(-time.Hour)
	if ev, _, err := s.AppendEvent(t0(), contract.Event{Type: contract.EventDoorFault, Door: 1, At: at}, nil); err != nil || !ev.At.Equal(at) {
		t.Fatalf("got %+v, %v; want at %v", ev, err, at)
	}

	f := func(seq uint64, want string) {
		t.Helper()
		if got := store.EventID(seq); got != want {
			t.Errorf("EventID(%d): got %q; want %q", seq, got, want)
		}
	}
	f(1, "0000000000000001")
	f(10, "0000000000000010")
	f(1<<40, "0001099511627776")
}
