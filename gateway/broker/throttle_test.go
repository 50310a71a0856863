package broker

import (
	"fmt"
	"testing"
	"time"
)

func TestThrottleBackOffDoublesUpToItsMaximum(t *testing.T) {
	clock := newFakeClock()
	th := newLoginThrottle(clock.now)
	f := func(wantBlock time.Duration) {
		t.Helper()
		if wait := th.blocked("nobody", false, "10.0.0.1"); wait != 0 {
			t.Fatalf("still blocked for %s before a failure", wait)
		}
		if _, got := th.failed("nobody", false, "10.0.0.1"); got != wantBlock {
			t.Fatalf("block %s; want %s", got, wantBlock)
		}
		if wantBlock > 0 {
			clock.advance(wantBlock - time.Millisecond)
			if th.blocked("nobody", false, "10.0.0.1") == 0 {
				t.Fatalf("not blocked just before the %s block ends", wantBlock)
			}
			clock.advance(time.Millisecond)
		}
	}
	for range 4 {
		f(0)
	}
	for _, d := range []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048} {
		f(d * time.Second)
	}
	f(time.Hour)
	f(time.Hour)
}

func TestThrottleIgnoresAttemptsWhileBlocked(t *testing.T) {
	clock := newFakeClock()
	th := newLoginThrottle(clock.now)
	for range 5 {
		th.failed("nobody", false, "10.0.0.1")
	}
	for range 1000 { // refused at once, not counted: the block does not grow
		if th.blocked("nobody", false, "10.0.0.1") == 0 {
			t.Fatal("not blocked")
		}
	}
	clock.advance(time.Second)
	if wait := th.blocked("nobody", false, "10.0.0.1"); wait != 0 {
		t.Fatalf("blocked %s after the first back-off; want free", wait)
	}
}

func TestThrottleForgetsAndStaysBounded(t *testing.T) {
	clock := newFakeClock()
	th := newLoginThrottle(clock.now)
	for range 20 {
		th.failed("kiosk", true, "10.0.0.1")
	}
	clock.advance(2*time.Hour + time.Second) // twice the longest back-off
	if wait := th.blocked("kiosk", true, "10.0.0.1"); wait != 0 {
		t.Fatalf("blocked %s after the failures were forgotten", wait)
	}
	if _, d := th.failed("kiosk", true, "10.0.0.1"); d != 0 {
		t.Fatalf("the first failure after forgetting blocks %s", d)
	}
	for i := range maxThrottleKeys + 10 {
		th.failed(fmt.Sprintf("guess%d", i), false, fmt.Sprintf("10.1.%d.%d", i/256, i%256))
		th.succeeded("kiosk", fmt.Sprintf("10.2.%d.%d", i/256, i%256))
	}
	if len(th.keys) > maxThrottleKeys || len(th.known) > maxThrottleKeys {
		t.Errorf("%d failure keys, %d known logins; want at most %d each", len(th.keys), len(th.known), maxThrottleKeys)
	}
	if _, ok := th.keys["u guess1"]; ok {
		t.Errorf("an unknown user name got a key")
	}
}

func TestThrottleKnownLoginSkipsTheAddressLimit(t *testing.T) {
	clock := newFakeClock()
	th := newLoginThrottle(clock.now)
	th.succeeded("kiosk", "127.0.0.1")
	for range 5 {
		th.failed("nobody", false, "127.0.0.1")
	}
	f := func(name string, isUser bool, ip string, wantBlocked bool) {
		t.Helper()
		if got := th.blocked(name, isUser, ip) > 0; got != wantBlocked {
			t.Errorf("%s from %s blocked=%v; want %v", name, ip, got, wantBlocked)
		}
	}
	f("kiosk", true, "127.0.0.1", false) // has logged in from there
	f("door3", true, "127.0.0.1", true)
	f("nobody", false, "127.0.0.1", true)
	f("kiosk", true, "127.0.0.2", false)
	// A guesser of the kiosk's own password there meets the pair's limit,
	// which blocks neither the kiosk elsewhere nor the user.
	for range 10 {
		th.failed("kiosk", true, "127.0.0.1")
	}
	f("kiosk", true, "127.0.0.1", true)
	f("kiosk", true, "127.0.0.2", false)
	clock.advance(time.Second)
	f("kiosk", true, "127.0.0.1", false)
	// Guessers elsewhere block the user, but not at its known address.
	for i := range 10 {
		th.failed("kiosk", true, fmt.Sprintf("127.1.0.%d", i+1))
	}
	f("kiosk", true, "127.0.0.2", true)
	f("kiosk", true, "127.0.0.1", false)
	th.succeeded("kiosk", "127.0.0.1")
	if _, ok := th.keys["p kiosk 127.0.0.1"]; ok {
		t.Error("a login did not forget the pair's failures")
	}
}
