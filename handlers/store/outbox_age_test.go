package store_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/store"
)

// monoClock is an injected monotonic clock (store.Config.Monotonic): it moves
// only when the test moves it, whatever the wall clock does.
type monoClock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *monoClock) now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.d
}

func (c *monoClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.d += d
}

// set moves the clock to d; a monotonic clock never goes back.
func (c *monoClock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d < c.d {
		panic(fmt.Sprintf("monoClock.set(%s): the clock is at %s already", d, c.d))
	}
	c.d = d
}

// pruneDrops prunes at the wall time now and returns what OnDrop received.
func pruneDrops(t testing.TB, s *store.Store, drops *dropLog, now time.Time) []string {
	t.Helper()
	if _, err := s.Prune(now); err != nil {
		t.Fatalf("Prune(%s): %v", now, err)
	}
	return drops.take()
}

// TestOutboxAgeIgnoresWallClockSteps: messages queued seconds ago survive
// the wall clock stepping 31 days forward (a locker without RTC that booted
// at an old time, then NTP corrected it) and back; only time that passed on
// the monotonic clock ages them.
func TestOutboxAgeIgnoresWallClockSteps(t *testing.T) {
	var drops dropLog
	var mono monoClock
	mono.set(7 * time.Hour) // a monotonic clock starts anywhere
	s := openTestStore(t, func(c *store.Config) {
		c.OutboxMaxAge = 30 * 24 * time.Hour
		c.OnDrop = drops.record
		c.Monotonic = mono.now
	})
	booted := t0().AddDate(-1, 0, 0) // the old time restored at boot
	appendEvents(t, s, booted, 60)
	mono.advance(30 * time.Second)

	f := func(now time.Time, depth int) {
		t.Helper()
		if got := pruneDrops(t, s, &drops, now); len(got) != 0 {
			t.Fatalf("Prune at %s: dropped %v; want nothing (the messages waited %s at most)", now, got, 30*time.Second)
		}
		if st, err := s.OutboxStats(); err != nil || st.Depth != depth || st.Waited != 30*time.Second {
			t.Fatalf("OutboxStats after Prune at %s: got %+v, %v; want all %d messages, the oldest waiting 30s", now, st, err, depth)
		}
	}
	f(booted.AddDate(0, 0, 31), 60)  // NTP steps the clock forward
	f(booted.AddDate(1, 0, 31), 60)  // far beyond
	f(booted.AddDate(0, 0, -31), 60) // and back
	appendEvents(t, s, booted.AddDate(0, 0, 62), 1)
	f(booted, 61) // a message stamped in the future by the wall clock changes nothing either

	// Time that truly passes still ages them: the first 60 have waited
	// longer than the bound, the newest has not.
	mono.advance(30*24*time.Hour - 30*time.Second + time.Nanosecond)
	if got, want := pruneDrops(t, s, &drops, booted), []string{"age:60"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("OnDrop after 30 days and 1 ns of waiting: got %v; want %v", got, want)
	}
	if got := outboxSeqs(t, s); !reflect.DeepEqual(got, []uint64{61}) {
		t.Fatalf("outbox: got %v; want only the message queued 30 s later", got)
	}
}

// TestOutboxAgeAcrossRestarts: the time a message waited adds up over
// runs of the store (each with a monotonic clock that starts anew), and after
// a power cut it restarts from the last commit: a message may wait longer
// than the bound by the time since that commit, never less than the bound.
func TestOutboxAgeAcrossRestarts(t *testing.T) {
	var drops dropLog
	cfg := testConfig(t)
	cfg.OutboxMaxAge = time.Hour
	cfg.OnDrop = drops.record
	run := func(start time.Duration) (*store.Store, *monoClock) {
		t.Helper()
		mono := &monoClock{d: start}
		c := cfg
		c.Monotonic = mono.now
		return openStore(t, c, true), mono
	}

	s, mono := run(5 * time.Hour)
	appendEvents(t, s, t0(), 2)
	mono.advance(40 * time.Minute)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Second run: its clock starts at 0; the messages have waited 40 min.
	s, mono = run(0)
	mono.advance(20 * time.Minute)
	if got := pruneDrops(t, s, &drops, t0().AddDate(0, 0, 31)); len(got) != 0 {
		t.Fatalf("Prune after 40+20 min of waiting: dropped %v; want nothing", got)
	}
	mono.advance(time.Nanosecond)
	if got, want := pruneDrops(t, s, &drops, t0()), []string{"age:2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Prune after 40+20 min and 1 ns of waiting: got %v; want %v", got, want)
	}
	appendEvents(t, s, t0(), 1) // seq 3, the last commit

	// A power cut 50 minutes after the last commit: the copy of the file is
	// what a cut leaves (each commit is written to the file before it returns).
	mono.advance(50 * time.Minute)
	cut := filepath.Join(t.TempDir(), "cut.db")
	raw, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cut, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Path = cut
	s, mono = run(0)
	// The 50 minutes after the last commit are lost: the message has waited
	// 0 min as far as this run knows, and lives 50 min longer than the bound.
	mono.advance(time.Hour)
	if got := pruneDrops(t, s, &drops, t0()); len(got) != 0 {
		t.Fatalf("Prune an hour after the power cut: dropped %v; want nothing", got)
	}
	mono.advance(time.Nanosecond)
	if got, want := pruneDrops(t, s, &drops, t0()), []string{"age:1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Prune an hour and 1 ns after the power cut: got %v; want %v", got, want)
	}
}

// TestOutboxAgeOfMessagesWithoutUptime: messages of a database from before
// the uptime stamps (only a wall-clock time, a month old) are not dropped on
// it: their age starts at 0 in the first run that sees them.
func TestOutboxAgeOfMessagesWithoutUptime(t *testing.T) {
	var drops dropLog
	cfg := testConfig(t)
	cfg.OutboxMaxAge = time.Hour
	cfg.OnDrop = drops.record
	mono := &monoClock{d: 3 * time.Hour}
	cfg.Monotonic = mono.now
	s := openStore(t, cfg, true)
	appendEvents(t, s, t0().AddDate(0, -1, 0), 3)
	mono.advance(2 * time.Hour)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	unstamp(t, cfg.Path)

	mono = &monoClock{}
	cfg.Monotonic = mono.now
	s = openStore(t, cfg, true)
	if got := pruneDrops(t, s, &drops, t0()); len(got) != 0 {
		t.Fatalf("Prune of unstamped messages a month old by the wall clock: dropped %v; want nothing", got)
	}
	mono.advance(time.Hour)
	if got := pruneDrops(t, s, &drops, t0()); len(got) != 0 {
		t.Fatalf("Prune an hour after the first run that saw them: dropped %v; want nothing", got)
	}
	if got := outboxSeqs(t, s); !reflect.DeepEqual(got, []uint64{1, 2, 3}) {
		t.Fatalf("outbox: got %v; want 1..3", got)
	}
	mono.advance(time.Nanosecond)
	if got, want := pruneDrops(t, s, &drops, t0()), []string{"age:3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Prune an hour and 1 ns after the first run that saw them: got %v; want %v", got, want)
	}
}

// unstamp rewrites a closed database as one from before the uptime stamps:
// its outbox messages lose their "up" field (the booked size follows) and
// the mark that they all have one. It keeps the saved uptime, so that a
// message taken as stamped at 0 would look older than it is.
func unstamp(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, meta := tx.Bucket([]byte("outbox")), tx.Bucket([]byte("meta"))
		var keys, vals [][]byte
		var shrunk int64
		err := b.ForEach(func(k, v []byte) error {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			if _, ok := m["up"]; !ok {
				return fmt.Errorf("message %x has no up field: %s", k, v)
			}
			delete(m, "up")
			raw, err := json.Marshal(m)
			if err != nil {
				return err
			}
			shrunk += int64(len(v) - len(raw))
			keys, vals = append(keys, append([]byte(nil), k...)), append(vals, raw)
			return nil
		})
		if err != nil {
			return err
		}
		for i := range keys {
			if err := b.Put(keys[i], vals[i]); err != nil {
				return err
			}
		}
		booked := binary.BigEndian.Uint64(meta.Get([]byte("outbox_bytes")))
		if err := meta.Put([]byte("outbox_bytes"), binary.BigEndian.AppendUint64(nil, booked-uint64(shrunk))); err != nil {
			return err
		}
		return meta.Delete([]byte("outbox_uptimes"))
	})
	if err != nil {
		t.Fatalf("unstamp %s: %v", path, err)
	}
}

// TestOutboxDropOrDeliver: the age prune and the removal of acknowledged
// messages racing over the same messages count each message once: as
// dropped by the one, or as delivered by the other, never both.
func TestOutboxDropOrDeliver(t *testing.T) {
	var drops dropLog
	var mono monoClock
	s := openTestStore(t, func(c *store.Config) {
		c.OutboxMaxAge = time.Hour
		c.OnDrop = drops.record
		c.Monotonic = mono.now
	})
	const n = 40
	for round := range 20 {
		sent := appendEvents(t, s, t0(), n)
		mono.advance(time.Hour + time.Nanosecond) // all of them are past the bound
		var wg sync.WaitGroup
		delivered := make([]int, n)
		errs := make(chan error, n+1)
		for i, m := range sent { // the acknowledgements, one commit each
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, err := s.OutboxDelivered(m.Seq)
				delivered[i] = k
				errs <- err
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Prune(t0())
			errs <- err
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		dropped := 0
		for _, d := range drops.take() {
			var k int
			if _, err := fmt.Sscanf(d, "age:%d", &k); err != nil {
				t.Fatalf("round %d: OnDrop got %q; want reason age", round, d)
			}
			dropped += k
		}
		got := 0
		for i, k := range delivered {
			if k > 1 {
				t.Fatalf("round %d: message %d counted delivered %d times", round, sent[i].Seq, k)
			}
			got += k
		}
		if got+dropped != n {
			t.Fatalf("round %d: %d delivered + %d dropped; want each of the %d messages counted once", round, got, dropped, n)
		}
		if st, err := s.OutboxStats(); err != nil || st.Depth != 0 {
			t.Fatalf("round %d: OutboxStats: got %+v, %v; want an empty outbox", round, st, err)
		}
		// An acknowledgement repeated after the removal counts nothing.
		if k, err := s.OutboxDelivered(seqsOf(sent)...); err != nil || k != 0 {
			t.Fatalf("round %d: OutboxDelivered again: got %d, %v; want 0", round, k, err)
		}
	}
}
