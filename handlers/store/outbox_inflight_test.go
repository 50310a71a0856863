package store_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// eventSize is the size in the outbox of one event of appendEvents.
func eventSize(t *testing.T) int64 {
	t.Helper()
	probe := openTestStore(t)
	appendEvents(t, probe, t0(), 1)
	st, err := probe.OutboxStats()
	if err != nil {
		t.Fatalf("OutboxStats: %v", err)
	}
	return st.Bytes
}

// dropCount sums the drops that OnDrop reported for reason.
func dropCount(t *testing.T, d *dropLog, reason string) int {
	t.Helper()
	n := 0
	for _, call := range d.take() {
		var k int
		if _, err := fmt.Sscanf(call, reason+":%d", &k); err != nil {
			t.Fatalf("OnDrop: got %q; want reason %s", call, reason)
		}
		n += k
	}
	return n
}

func hold(t *testing.T, s *store.Store, after uint64, max int) []uint64 {
	t.Helper()
	msgs, err := s.OutboxHold(after, max)
	if err != nil {
		t.Fatalf("OutboxHold: %v", err)
	}
	return seqsOf(msgs)
}

func delivered(t *testing.T, s *store.Store, seqs ...uint64) int {
	t.Helper()
	n, err := s.OutboxDelivered(seqs...)
	if err != nil {
		t.Fatalf("OutboxDelivered: %v", err)
	}
	return n
}

// TestOutboxHeldSurvivesTheByteBound: messages the bridge holds in flight
// are neither dropped nor counted against the byte bound; once delivered
// they count as delivered, and once released the next trim applies to them.
func TestOutboxHeldSurvivesTheByteBound(t *testing.T) {
	size := eventSize(t)
	var drops dropLog
	s := openTestStore(t, func(c *store.Config) {
		c.OutboxMaxBytes = 4*size + size/2
		c.OnDrop = drops.record
	})
	f := func(step string, wantSeqs []uint64, wantDropped int) {
		t.Helper()
		if got := outboxSeqs(t, s); !reflect.DeepEqual(got, wantSeqs) {
			t.Fatalf("%s: outbox %v; want %v", step, got, wantSeqs)
		}
		if got := dropCount(t, &drops, "bytes"); got != wantDropped {
			t.Fatalf("%s: %d dropped; want %d", step, got, wantDropped)
		}
	}
	appendEvents(t, s, t0(), 4)
	if got, want := hold(t, s, 0, 2), []uint64{1, 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("OutboxHold: got %v; want %v", got, want)
	}
	// Without the hold these appends would drop 1, 2 and 3; the unsent ones
	// go instead, and the outbox is over its bound by the two held.
	appendEvents(t, s, t0().Add(time.Minute), 2)
	f("held", []uint64{1, 2, 3, 4, 5, 6}, 0)
	appendEvents(t, s, t0().Add(2*time.Minute), 1)
	f("held, more appended", []uint64{1, 2, 4, 5, 6, 7}, 1)
	if st, err := s.OutboxStats(); err != nil || st.Bytes <= 4*size+size/2 {
		t.Fatalf("OutboxStats: got %+v, %v; want over the bound by the held messages", st, err)
	}

	// 1 is acknowledged: delivered, not dropped. 2 is released (the link
	// dropped): the outbox is over its bound until the next append trims it,
	// 2 first.
	if got := delivered(t, s, 1); got != 1 {
		t.Fatalf("OutboxDelivered(1): got %d; want 1", got)
	}
	s.OutboxRelease(2)
	f("released", []uint64{2, 4, 5, 6, 7}, 0)
	appendEvents(t, s, t0().Add(3*time.Minute), 1)
	f("after the release", []uint64{5, 6, 7, 8}, 2)
	if got := delivered(t, s, 2); got != 0 {
		t.Fatalf("OutboxDelivered(2) after its drop: got %d; want 0 (counted dropped)", got)
	}
	if st, err := s.OutboxStats(); err != nil || st.Bytes > 4*size+size/2 {
		t.Fatalf("OutboxStats: got %+v, %v; want within the bound again", st, err)
	}

	// OutboxDelivered releases too, also the messages it did not find.
	hold(t, s, 0, 1) // 5
	if got := delivered(t, s, 5); got != 1 {
		t.Fatalf("OutboxDelivered(5): got %d; want 1", got)
	}
	hold(t, s, 0, 1) // 6
	appendEvents(t, s, t0().Add(4*time.Minute), 3)
	f("6 held", []uint64{6, 8, 9, 10, 11}, 1)
	if got := delivered(t, s, 99, 6); got != 1 {
		t.Fatalf("OutboxDelivered(99, 6): got %d; want 1", got)
	}
	appendEvents(t, s, t0().Add(5*time.Minute), 1)
	f("nothing held", []uint64{9, 10, 11, 12}, 1)
}

// TestOutboxHeldSurvivesTheAgeBound: the age prune skips held messages and
// drops them once released.
func TestOutboxHeldSurvivesTheAgeBound(t *testing.T) {
	var drops dropLog
	var mono monoClock
	s := openTestStore(t, func(c *store.Config) {
		c.OutboxMaxAge = time.Hour
		c.OnDrop = drops.record
		c.Monotonic = mono.now
	})
	appendEvents(t, s, t0(), 4)
	hold(t, s, 0, 1) // 1
	hold(t, s, 2, 1) // 3
	mono.advance(time.Hour + time.Nanosecond)
	if _, err := s.Prune(t0()); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if got, want := outboxSeqs(t, s), []uint64{1, 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("outbox after the prune: got %v; want the held %v", got, want)
	}
	if got := dropCount(t, &drops, "age"); got != 2 {
		t.Fatalf("%d dropped; want 2", got)
	}
	if got := delivered(t, s, 1); got != 1 {
		t.Fatalf("OutboxDelivered(1): got %d; want 1", got)
	}
	s.OutboxRelease(3)
	if _, err := s.Prune(t0()); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if got := outboxSeqs(t, s); len(got) != 0 {
		t.Fatalf("outbox after the release: got %v; want empty", got)
	}
	if got := dropCount(t, &drops, "age"); got != 1 {
		t.Fatalf("%d dropped after the release; want 1", got)
	}
}

// TestOutboxHoldRacesTheBound: a bridge holding messages while appends trim
// the outbox never gets one that a trim drops: each message it holds is
// delivered, and every message is counted once, dropped or delivered.
func TestOutboxHoldRacesTheBound(t *testing.T) {
	size := eventSize(t)
	var drops dropLog
	s := openTestStore(t, func(c *store.Config) {
		c.OutboxMaxBytes = size + size/2 // a second unheld message drops the first
		c.OnDrop = drops.record
	})
	// Lockers appending faster than the bridge takes, each event in a commit
	// of its own, so that most reads meet a trim of the message they read.
	const appenders, each = 4, 200
	const n = appenders * each
	appended := make(chan error, appenders)
	for range appenders {
		go func() {
			for i := range each {
				ev := contract.Event{Type: contract.EventLeftOpen, Door: 1}
				if _, _, err := s.AppendEvent(t0().Add(time.Duration(i)*time.Second), ev, nil); err != nil {
					appended <- err
					return
				}
			}
			appended <- nil
		}()
	}
	got := 0
	var next uint64
	running := appenders
	for running > 0 || next < n {
		seqs, err := s.OutboxHold(next, 1)
		if err != nil {
			t.Errorf("OutboxHold: %v", err)
			break
		}
		if len(seqs) == 0 {
			if running == 0 {
				break // the last ones were dropped
			}
			select { // like the bridge
			case <-s.OutboxNotify():
			case err := <-appended:
				if err != nil {
					t.Errorf("AppendEvent: %v", err)
				}
				running--
			}
			continue
		}
		k, err := s.OutboxDelivered(seqsOf(seqs)...)
		if err != nil || k != len(seqs) {
			t.Errorf("OutboxDelivered(%v): got %d, %v; want every held message delivered", seqsOf(seqs), k, err)
			break
		}
		got += k
		next = seqs[0].Seq
	}
	for ; running > 0; running-- {
		if err := <-appended; err != nil {
			t.Errorf("AppendEvent: %v", err)
		}
	}
	if t.Failed() {
		return
	}
	if dropped := dropCount(t, &drops, "bytes"); got+dropped != n {
		t.Fatalf("%d delivered + %d dropped; want each of the %d messages counted once", got, dropped, n)
	}
}
