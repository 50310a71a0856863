package bridge

import (
	"testing"
	"time"
)

func TestMapTopic(t *testing.T) {
	up, err := compile(DefaultUp(), "L1", "Up")
	if err != nil {
		t.Fatal(err)
	}
	down, err := compile(append([]Mapping{{From: "lockers/{id}/ping", To: "locky/ping"}}, DefaultDown()...), "L1", "Down")
	if err != nil {
		t.Fatal(err)
	}
	f := func(routes []route, in, want string, wantOK bool) {
		t.Helper()
		got, _, ok := mapTopic(routes, in)
		if got != want || ok != wantOK {
			t.Errorf("mapTopic(%q) = %q, %t; want %q, %t", in, got, ok, want, wantOK)
		}
	}
	f(up, "locky/up/events", "lockers/L1/up/events", true)
	f(up, "locky/up/acks", "lockers/L1/up/acks", true)
	f(up, "locky/up/a/b", "lockers/L1/up/a/b", true)
	f(up, "locky/up", "lockers/L1/up", true)
	f(up, "locky/upx", "", false)
	f(up, "locky/down/x", "", false)
	f(down, "lockers/L1/down/reservations", "locky/down/reservations", true)
	f(down, "lockers/L1/ping", "locky/ping", true)
	f(down, "lockers/L2/down/reservations", "", false)
	if down[1].filter != "lockers/L1/down/#" {
		t.Errorf("filter %q; want lockers/L1/down/#", down[1].filter)
	}
}

func TestBackoff(t *testing.T) {
	b := &Bridge{cfg: Config{RetryMin: time.Second, RetryMax: 10 * time.Second}}
	f := func(n int, lo, hi time.Duration) {
		t.Helper()
		for range 100 {
			if got := b.backoff(n); got < lo || got > hi {
				t.Fatalf("backoff(%d) = %s; want within [%s, %s]", n, got, lo, hi)
			}
		}
	}
	f(0, 0, time.Second)
	// After a link that was up, the first attempt is spread, not immediate.
	spread := false
	for range 100 {
		spread = spread || b.backoff(0) > 0
	}
	if !spread {
		t.Error("backoff(0) is 0 in 100 draws; want a random part of RetryMin, so that a fleet does not reconnect at once")
	}
	f(1, 500*time.Millisecond, time.Second)
	f(2, time.Second, 2*time.Second)
	f(4, 4*time.Second, 8*time.Second)
	f(5, 5*time.Second, 10*time.Second)
	f(100, 5*time.Second, 10*time.Second)
}

func TestLocalBackoff(t *testing.T) {
	b := &Bridge{cfg: Config{LocalRetryMin: 100 * time.Millisecond, LocalRetryMax: time.Second}}
	f := func(n int, want time.Duration) {
		t.Helper()
		if got := b.localBackoff(n); got != want {
			t.Errorf("localBackoff(%d) = %s; want %s", n, got, want)
		}
	}
	f(1, 100*time.Millisecond)
	f(2, 200*time.Millisecond)
	f(4, 800*time.Millisecond)
	f(5, time.Second)
	f(1000, time.Second)
}
