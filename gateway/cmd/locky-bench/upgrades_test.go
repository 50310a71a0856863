package main

import (
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

func TestLongestGap(t *testing.T) {
	base := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, m := range ms {
			ts = append(ts, base.Add(time.Duration(m)*time.Millisecond))
		}
		return ts
	}
	f := func(answers []time.Time, from, to int, want time.Duration) {
		t.Helper()
		k := &kiosk{answers: answers}
		if got := k.longestGap(base.Add(time.Duration(from)*time.Millisecond), base.Add(time.Duration(to)*time.Millisecond)); got != want {
			t.Fatalf("longestGap(%d, %d): got %s; want %s", from, to, got, want)
		}
	}
	f(at(0, 20, 40, 60), 30, 70, 20*time.Millisecond)
	f(at(0, 20, 150, 170), 30, 200, 130*time.Millisecond) // from the last answer before the swap
	f(at(0, 20, 150, 170, 900), 30, 200, 130*time.Millisecond)
	f(at(0, 20, 170, 150), 30, 200, 130*time.Millisecond) // out of order
	f(at(0, 20), 30, 200, 0)
	f(nil, 30, 200, 0)
}

func TestPoolLifeOfADoor(t *testing.T) {
	p := newPool(1)
	f := func(wantCode string) {
		t.Helper()
		door, code, ok := p.take()
		if !ok || door != 1 || code != wantCode {
			t.Fatalf("take: got door %d, %q, %v; want door 1, %q", door, code, ok, wantCode)
		}
		if _, _, ok := p.take(); ok {
			t.Fatal("take: a second door; want none while door 1 is taken")
		}
	}
	f(depositCode(0))
	p.opened(1, time.Now())
	p.event(contract.Event{Type: contract.EventReopened, Reservation: "R0"}, time.Now())
	p.event(contract.Event{Type: contract.EventStored, Reservation: "R0"}, time.Now())
	f(pickupCode(0))
	p.event(contract.Event{Type: contract.EventDelivered, Reservation: "R0"}, time.Now())
	if door := <-p.upserts; door != 1 || p.renew(door) != 1 {
		t.Fatalf("after the pickup: door %d; want door 1 renewed with reservation 1", door)
	}
	p.free(1)
	f(depositCode(1))
	if p.other[contract.EventReopened] != 1 || len(p.cycles) != 1 || p.cycles[0].event.IsZero() {
		t.Fatalf("other %v, cycles %d; want 1 reopened, 1 cycle with its event", p.other, len(p.cycles))
	}
}
