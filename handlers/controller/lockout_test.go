package controller

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// TestLockoutBound holds the lockout to the bound the README's threat model
// states, with the defaults: at most 30 wrong codes are judged in the first
// hour and at most 5 more in each hour after (30 + 5(h-1) in any first h
// hours), whether the guesser never stops or pauses after each longest
// lockout for up to (or past) the day of quiet that starts the doubling again.
func TestLockoutBound(t *testing.T) {
	f := func(name string, pause time.Duration) {
		t.Helper()
		l := lockout{threshold: 5, window: 5 * time.Minute, base: time.Minute, max: time.Hour, resetAfter: 24 * time.Hour}
		start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		const days = 7
		judged, now := 0, start
		for hour := 1; hour <= days*24; hour++ {
			for end := start.Add(time.Duration(hour) * time.Hour); now.Before(end); now = now.Add(time.Second) {
				if l.locked(now) > 0 {
					continue
				}
				if d := l.fail(now); d > 0 {
					now = now.Add(d) // waits out the lockout
					if d == l.max {
						now = now.Add(pause) // then pauses, hoping for a fresh series
					}
				}
				judged++
			}
			if bound := 30 + 5*(hour-1); judged > bound {
				t.Fatalf("%s: %d wrong codes judged in the first %d h; want at most %d", name, judged, hour, bound)
			}
		}
		if judged == 0 {
			t.Fatalf("%s: no guess judged", name)
		}
	}
	f("a guesser who never stops", 0)
	f("a guesser who pauses an hour after each longest lockout", time.Hour)
	f("a guesser who pauses a day after each longest lockout", 24*time.Hour)
	f("a guesser who pauses a day and a second after each longest lockout", 24*time.Hour+time.Second)
}

// TestAValidCodeDoesNotResetTheLockout interleaves a code that still works
// between guesses for an hour, both ways the attack was found: a pickup code
// within its grace period (the door opens and closes at once) and a code
// whose door is held shut (door_fault, the code is not consumed). Neither
// buys a guess: the hour still judges at most 30 wrong codes.
func TestAValidCodeDoesNotResetTheLockout(t *testing.T) {
	f := func(name string, valid func(r *rig)) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				start := time.Now()
				invalid, tries := 0, 0
				for ; time.Since(start) < time.Hour; tries++ {
					valid(r)
					switch d := r.code(fmt.Sprintf("%06d", 500000+tries)); d.Result {
					case contract.ResultInvalidCode:
						invalid++
					case contract.ResultLockedOut:
					default:
						t.Fatalf("guess %d: %+v; want invalid_code or locked_out", tries, d)
					}
					time.Sleep(10 * time.Second) // a guess every 10 s: 360 tries in the hour
				}
				lockouts := 0
				for _, e := range r.events() {
					if e.Type == contract.EventLockout {
						lockouts++
					}
				}
				if judged := invalid + lockouts; judged > 30 || lockouts == 0 {
					t.Fatalf("%d wrong codes judged in an hour of %d tries, %d lockouts; want at most 30", judged, tries, lockouts)
				}
			})
		})
	}
	f("a pickup code within its grace period", func(r *rig) {
		if st, _ := r.st.Reservation("R1"); st.Status == contract.StatusArriving {
			r.code("1111")
			r.door(2, "open")
			r.door(2, "closed")
			r.code("2222")
			r.door(2, "open")
			r.door(2, "closed") // delivered: 2222 is now within its grace period
		}
		if d := r.code("2222"); d.Result == "" { // commanded: the door opens
			r.door(2, "open")
			r.door(2, "closed")
		}
	})
	f("a code whose door is held shut", func(r *rig) {
		r.code("1111")
		time.Sleep(6 * time.Second) // past the door timeout: door_fault, the code stays valid
	})
}

// restart replaces the rig's controller with a new one on the same database,
// as a power cut would.
func (r *rig) restart() { r.t.Helper(); r.restartOn(r.st) }

// restartOn replaces the rig's controller with a new one on s (the rig's
// store, or one that wraps it to inject a fault).
func (r *rig) restartOn(s Store) {
	r.t.Helper()
	r.c.Close()
	c, err := New(Config{Store: s, Broker: r.b})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := c.Start(r.t.Context()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	r.c = c
	synctest.Wait()
}

func TestARestartGivesNoFreshAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		for i := 0; i < 4; i++ {
			r.code("9999")
		}
		r.restart()
		if d := r.code("9999"); d.Result != contract.ResultLockedOut || d.RetryAfterS != 60 {
			t.Fatalf("5th wrong code, after a restart: %+v; want locked_out for 60 s", d)
		}
	})
}

func TestAClockStepBackDoesNotLengthenALockout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		// The lockout was written by a clock a year ahead, which NTP has
		// since stepped back: the restart sees it end a year from now.
		if err := r.st.SaveLockout(store.Lockout{Until: time.Now().Add(365*24*time.Hour + time.Minute), For: time.Minute, Level: 1}); err != nil {
			t.Fatal(err)
		}
		r.restart()
		if d := r.code("1111"); d.Result != contract.ResultLockedOut || d.RetryAfterS != 60 {
			t.Fatalf("after a clock step back: %+v; want locked_out for its own 60 s, not longer", d)
		}
		time.Sleep(time.Minute)
		r.code("1111")
		if n := r.b.count(contract.DoorCommandTopic(2)); n != 1 {
			t.Fatalf("%d door commands for a valid code after the lockout's own length; want 1", n)
		}
	})
}

func (r *recorder) count(topic string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m.Topic == topic {
			n++
		}
	}
	return n
}
