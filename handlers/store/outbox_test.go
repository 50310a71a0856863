package store_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// appendEvents commits n events, one a second from start, and returns their messages.
func appendEvents(t testing.TB, s *store.Store, start time.Time, n int) []store.Message {
	t.Helper()
	var out []store.Message
	for i := range n {
		_, msgs, err := s.AppendEvent(start.Add(time.Duration(i)*time.Second), contract.Event{Type: contract.EventLeftOpen, Door: i + 1}, nil)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("AppendEvent: got %s, %v; want one message", dump(msgs), err)
		}
		out = append(out, msgs...)
	}
	return out
}

func seqsOf(msgs []store.Message) []uint64 {
	out := []uint64{}
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

func outboxSeqs(t testing.TB, s *store.Store) []uint64 {
	t.Helper()
	msgs, err := s.OutboxAfter(0, 1<<20)
	if err != nil {
		t.Fatalf("OutboxAfter: %v", err)
	}
	return seqsOf(msgs)
}

func TestOutbox(t *testing.T) {
	s := openTestStore(t)
	if st, err := s.OutboxStats(); err != nil || st != (store.OutboxStats{}) {
		t.Fatalf("OutboxStats of an empty outbox: got %+v, %v; want zero", st, err)
	}
	select {
	case <-s.OutboxNotify():
		t.Fatalf("OutboxNotify fired before any commit")
	default:
	}
	sent := appendEvents(t, s, t0(), 6)
	select {
	case <-s.OutboxNotify():
	default:
		t.Fatalf("OutboxNotify did not fire after commits that added messages")
	}

	f := func(after uint64, max int, want []uint64) {
		t.Helper()
		got, err := s.OutboxAfter(after, max)
		if err != nil {
			t.Fatalf("OutboxAfter(%d, %d): %v", after, max, err)
		}
		if !reflect.DeepEqual(seqsOf(got), want) {
			t.Errorf("OutboxAfter(%d, %d): got %v; want %v", after, max, seqsOf(got), want)
		}
	}
	f(0, 100, []uint64{1, 2, 3, 4, 5, 6})
	f(0, 2, []uint64{1, 2})
	f(2, 3, []uint64{3, 4, 5})
	f(6, 10, []uint64{})
	f(0, 0, []uint64{})
	got, err := s.OutboxAfter(0, 100)
	if err != nil || !reflect.DeepEqual(got, sent) {
		t.Fatalf("OutboxAfter: got %s, %v; want what the commits returned: %s", dump(got), err, dump(sent))
	}

	var total int64
	st, err := s.OutboxStats()
	if err != nil || st.Depth != 6 || st.Bytes <= 0 || !st.Oldest.Equal(t0()) {
		t.Fatalf("OutboxStats: got %+v, %v; want 6 messages, the oldest at %v", st, err, t0())
	}
	total = st.Bytes

	// Removing what the cloud acknowledged; unknown sequences are ignored.
	if err := s.OutboxRemove(1, 3, 99); err != nil {
		t.Fatalf("OutboxRemove: %v", err)
	}
	if err := s.OutboxRemove(1); err != nil {
		t.Fatalf("OutboxRemove again: %v", err)
	}
	f(0, 100, []uint64{2, 4, 5, 6})
	st, err = s.OutboxStats()
	if err != nil || st.Depth != 4 || st.Bytes >= total || !st.Oldest.Equal(t0().Add(time.Second)) {
		t.Fatalf("OutboxStats: got %+v, %v; want 4 messages, fewer than %d bytes, the oldest at %v", st, err, total, t0().Add(time.Second))
	}
	if err := s.OutboxRemove(2, 4, 5, 6); err != nil {
		t.Fatalf("OutboxRemove: %v", err)
	}
	if st, err := s.OutboxStats(); err != nil || st != (store.OutboxStats{}) {
		t.Fatalf("OutboxStats of an emptied outbox: got %+v, %v; want zero", st, err)
	}
	// Sequences keep increasing after the outbox empties.
	if next := appendEvents(t, s, t0(), 1); next[0].Seq != 7 {
		t.Fatalf("got sequence %d; want 7", next[0].Seq)
	}
}

func TestOutboxByteBound(t *testing.T) {
	// Measure one event's size in the outbox, then bound the outbox to 4 of them.
	probe := openTestStore(t)
	appendEvents(t, probe, t0(), 1)
	st, err := probe.OutboxStats()
	if err != nil {
		t.Fatalf("OutboxStats: %v", err)
	}
	size := st.Bytes

	var drops dropLog
	s := openTestStore(t, func(c *store.Config) {
		c.OutboxMaxBytes = 4*size + size/2
		c.OnDrop = drops.record
	})
	appendEvents(t, s, t0(), 4)
	if got := drops.take(); len(got) != 0 {
		t.Fatalf("OnDrop within the bound: got %v; want no calls", got)
	}
	if got := outboxSeqs(t, s); !reflect.DeepEqual(got, []uint64{1, 2, 3, 4}) {
		t.Fatalf("outbox: got %v; want 1..4", got)
	}

	appendEvents(t, s, t0().Add(time.Minute), 1)
	if got, want := drops.take(), []string{"bytes:1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("OnDrop: got %v; want %v", got, want)
	}
	if got := outboxSeqs(t, s); !reflect.DeepEqual(got, []uint64{2, 3, 4, 5}) {
		t.Fatalf("outbox: got %v; want the oldest dropped: 2..5", got)
	}

	// Smaller messages (acks): whatever is dropped is the oldest, and the
	// outbox stays within its bound.
	seed(t, s)
	dropped := drops.take()
	got := outboxSeqs(t, s)
	if len(got) == 0 || got[len(got)-1] != 11 || got[len(got)-1]-got[0] != uint64(len(got)-1) || len(dropped) == 0 {
		t.Fatalf("outbox: got %v after drops %v; want the newest messages, up to 11, without gaps", got, dropped)
	}
	n := 0
	for _, d := range dropped {
		var k int
		if _, err := fmt.Sscanf(d, "bytes:%d", &k); err != nil {
			t.Fatalf("OnDrop: got %q; want reason bytes", d)
		}
		n += k
	}
	if want := int(got[0]) - 2; n != want {
		t.Fatalf("OnDrop counted %d drops; want %d", n, want)
	}
	st, err = s.OutboxStats()
	if err != nil || st.Bytes > 4*size+size/2 || st.Depth != len(got) {
		t.Fatalf("OutboxStats: got %+v, %v; want %d messages within %d bytes", st, err, len(got), 4*size+size/2)
	}
}

func TestOutboxAgeBound(t *testing.T) {
	var drops dropLog
	var mono monoClock
	s := openTestStore(t, func(c *store.Config) {
		c.OutboxMaxAge = time.Hour
		c.OnDrop = drops.record
		c.Monotonic = mono.now
	})
	// The wall clock of each call is the monotonic clock's, so that the
	// wall-clock fields look like the waits; only the monotonic one counts.
	wall := func() time.Time { return t0().Add(mono.now()) }
	appendEvents(t, s, wall(), 3) // waited since 0
	mono.advance(30 * time.Minute)
	appendEvents(t, s, wall(), 2) // since 30m

	prune := func(want ...string) {
		t.Helper()
		if _, err := s.Prune(wall()); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		if got := drops.take(); !reflect.DeepEqual(got, want) {
			t.Fatalf("OnDrop at %s: got %v; want %v", mono.now(), got, want)
		}
	}
	mono.set(time.Hour)
	prune() // nothing has waited longer than an hour
	mono.set(time.Hour + time.Nanosecond)
	prune("age:3")
	appendEvents(t, s, wall(), 1) // since 1h and 1 ns
	mono.set(90*time.Minute + time.Nanosecond)
	prune("age:2")
	if got := outboxSeqs(t, s); !reflect.DeepEqual(got, []uint64{6}) {
		t.Fatalf("outbox: got %v; want only the newest message", got)
	}
	if st, err := s.OutboxStats(); err != nil || st.Depth != 1 || !st.Oldest.Equal(t0().Add(time.Hour+time.Nanosecond)) {
		t.Fatalf("OutboxStats: got %+v, %v; want 1 message from t0+1h", st, err)
	}
}

func TestOnCommit(t *testing.T) {
	var commits commitLog
	s := openTestStore(t, func(c *store.Config) { c.OnCommit = commits.record })

	check := func(what string, msgs []store.Message) {
		t.Helper()
		got := commits.take()
		if len(got) != 1 || !reflect.DeepEqual(got[0], msgs) {
			t.Fatalf("%s: OnCommit got %d calls %v; want one with %s", what, len(got), got, dump(msgs))
		}
		stored := slices.Clone(msgs) // a refusal is told to the caller, not stored
		for i := range stored {
			stored[i].Refusal = ""
		}
		outbox, err := s.OutboxAfter(msgs[0].Seq-1, len(msgs)+1)
		if err != nil || !reflect.DeepEqual(outbox, stored) {
			t.Fatalf("%s: outbox holds %s, %v; want exactly %s", what, dump(outbox), err, dump(stored))
		}
	}
	refusal := func(what string, msgs []store.Message, want string) {
		t.Helper()
		for _, m := range msgs {
			if m.Topic == contract.TopicAcks && m.Refusal != want {
				t.Fatalf("%s: the ack's Refusal is %q; want %q", what, m.Refusal, want)
			}
		}
	}

	msgs, err := s.UpsertPartner(t0(), "m-1", contract.Partner{ID: "acme"})
	mustOK(t, msgs, err, "m-1")
	check("accepted", msgs)
	refusal("accepted", msgs, "")

	// A rejected message commits only its ack, in a commit of its own.
	msgs, err = s.UpsertReservation(t0(), "m-2", newRes("R1", 7, dep0, pick0, cour0), grace)
	mustReject(t, msgs, err, "m-2", "door 7 does not exist")
	check("rejected", msgs)
	refusal("rejected", msgs, "reservation R1: door 7 does not exist: unknown door")

	msgs, err = s.Ack(t0(), "", contract.ErrBadPayload)
	if a := ackOf(t, msgs, err, ""); a.OK || a.Error != "bad payload" {
		t.Fatalf("Ack: got %+v; want ok:false, error %q", a, "bad payload")
	}
	check("ack of an undecodable message", msgs)

	msgs, err = s.Snapshot(t0(), "m-3")
	mustOK(t, msgs, err, "m-3")
	check("snapshot", msgs)

	// Commits without outbox messages do not call it.
	if _, err := s.DoorOpened(t0(), store.Cycle{Door: 1, Kind: store.KindSupport, OpenedAt: t0()}, nil); err != nil {
		t.Fatalf("DoorOpened: %v", err)
	}
	if err := s.OutboxRemove(1, 2); err != nil {
		t.Fatalf("OutboxRemove: %v", err)
	}
	if _, err := s.Prune(t0()); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if _, err := s.EnsureDoors(3, "M"); err != nil {
		t.Fatalf("EnsureDoors: %v", err)
	}
	if got := commits.take(); len(got) != 0 {
		t.Fatalf("OnCommit got %d calls for commits without outbox messages; want none", len(got))
	}
}
