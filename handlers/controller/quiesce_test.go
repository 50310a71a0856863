package controller

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// quiesce runs Quiesce on a goroutine of the bubble; the channel gets its
// result.
func (r *rig) quiesce() <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.c.Quiesce() }()
	synctest.Wait()
	return done
}

// TestQuiesceAwaitsTheDoorCommanded quiesces while door 2, commanded, has
// not reported open: Quiesce waits; meanwhile a code is answered busy and a
// support open is refused unacknowledged (so that it comes again after the
// restart); the door's open ends the wait with its cycle persisted.
func TestQuiesceAwaitsTheDoorCommanded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.code("1111")
		done := r.quiesce()
		select {
		case err := <-done:
			t.Fatalf("Quiesce returned %v while door 2 had not reported open", err)
		default:
		}
		if d := r.code("9999"); d.Result != contract.ResultBusy || d.Door != 0 {
			t.Errorf("a code while quiescing: got %+v; want busy, no door", d)
		}
		err := r.b.deliver(t, contract.TopicDownCommands, contract.TopicDownCommands, `{"msg_id":"s-1","command":"open_door","door":3,"reason":"ticket"}`)
		if err == nil {
			t.Errorf("a support open while quiescing was taken; want an error, so that it is delivered again")
		}
		r.b.mu.Lock()
		for _, m := range r.b.msgs {
			if m.Topic == contract.DoorCommandTopic(3) {
				t.Errorf("door 3 commanded while quiescing")
			}
		}
		r.b.mu.Unlock()
		msgs, err := r.st.OutboxAfter(0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Topic == contract.TopicAcks && strings.Contains(string(m.Payload), `"s-1"`) {
				t.Errorf("ack %s while quiescing; want none, so that the command is delivered again", m.Payload)
			}
		}
		r.door(2, "open")
		if err := <-done; err != nil {
			t.Fatalf("Quiesce: %v", err)
		}
		if cycles, err := r.st.Cycles(); err != nil || len(cycles) != 1 || cycles[0].Door != 2 {
			t.Fatalf("cycles after the open: %+v, %v; want door 2's, persisted", cycles, err)
		}
	})
}

// TestQuiesceEndsWithTheDoorTimeout quiesces while door 2 never opens, its
// door timeout (2 s) within the stop's wait (3 s): the wait ends with the
// door timeout (a door fault, the code kept), and Quiesce with no door
// awaited returns at once.
func TestQuiesceEndsWithTheDoorTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRigWith(t, func(c *Config) { c.DoorTimeout = 2 * time.Second })
		start := time.Now()
		r.code("1111")
		if err := <-r.quiesce(); err != nil {
			t.Fatalf("Quiesce: %v", err)
		}
		if waited := time.Since(start); waited > r.c.cfg.DoorTimeout {
			t.Errorf("Quiesce returned after %s (fake clock); want it within the door timeout, %s", waited, r.c.cfg.DoorTimeout)
		}
		if e := r.lastEvent(); e != contract.EventDoorFault {
			t.Errorf("event %q; want door.fault", e)
		}
		if err := <-r.quiesce(); err != nil {
			t.Fatalf("a second Quiesce: %v", err)
		}
	})
}

// TestQuiesceEndsWithinTheStopWait: with the default door timeout (5 s)
// longer than the stop's wait (3 s), a door that never opens holds the stop
// for the stop's wait only, so that the gateway exits within SPEC §3's 5 s,
// and gets its door fault then (support learns of it); codes are still
// answered busy afterwards.
func TestQuiesceEndsWithinTheStopWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.code("1111")
		start := time.Now()
		if err := <-r.quiesce(); err != nil {
			t.Fatalf("Quiesce: %v", err)
		}
		if waited := time.Since(start); waited != r.c.cfg.StopWait {
			t.Errorf("Quiesce returned after %s (fake clock); want the stop's wait, %s", waited, r.c.cfg.StopWait)
		}
		synctest.Wait() // the door fault Quiesce queued is committed
		ev := r.events()
		if len(ev) == 0 || ev[len(ev)-1].Type != contract.EventDoorFault || !strings.Contains(ev[len(ev)-1].Reason, "stopped before door 2") {
			t.Errorf("events %+v; want a last door.fault saying the gateway stopped before door 2 reported open", ev)
		}
		if d := r.code("9999"); d.Result != contract.ResultBusy {
			t.Errorf("a code after Quiesce: got %+v; want busy", d)
		}
	})
}

// TestQuiesceIsBoundedWhileTheWorkIsStuck: with the work goroutine stuck
// (a commit hanging in fdatasync), Quiesce still returns within the stop's
// wait, which counts from the call, not from when its own job runs; and
// Quiesce on a controller that never started returns at once.
func TestQuiesceIsBoundedWhileTheWorkIsStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		stuck := make(chan struct{})
		defer close(stuck)
		r.c.do(func() { <-stuck })
		start := time.Now()
		if err := <-r.quiesce(); err != nil {
			t.Fatalf("Quiesce: %v", err)
		}
		if waited := time.Since(start); waited != r.c.cfg.StopWait {
			t.Errorf("Quiesce returned after %s (fake clock); want the stop's wait, %s", waited, r.c.cfg.StopWait)
		}

		idle, err := New(Config{Store: r.st, Broker: &recorder{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-(&rig{c: idle}).quiesce(); err != nil {
			t.Fatalf("Quiesce before Start: %v", err)
		}
	})
}
