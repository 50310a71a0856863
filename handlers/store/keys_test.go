package store_test

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

const (
	keyA = "code-key-A-before-rotation"
	keyB = "code-key-B-after-rotation"

	previousMatches = "locky_store_previous_code_key_matches_total"
)

func TestHashCodeIsHMACSHA256OfTheCode(t *testing.T) {
	// The well-known HMAC-SHA256 example (key "key"): what the back-end's own
	// HMAC library gives must be what the locker stores.
	got := hex.EncodeToString(store.HashCode([]byte("key"), "The quick brown fox jumps over the lazy dog"))
	if want := "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"; got != want {
		t.Fatalf("HashCode: got %s; want %s", got, want)
	}
	s := openTestStore(t)
	if got, want := hex.EncodeToString(s.HashCode(dep0)), hex.EncodeToString(store.HashCode([]byte(testKey), dep0)); got != want {
		t.Fatalf("Store.HashCode(%s): got %s; want HashCode(its key) %s", dep0, got, want)
	}
}

// hashed is a reservation whose codes the back-end sends as hashes under key.
func hashed(id string, version uint64, door int, key, deposit, pickup, courier string) contract.Reservation {
	h := func(code string) string { return hex.EncodeToString(store.HashCode([]byte(key), code)) }
	return contract.Reservation{ID: id, Version: version, Door: door,
		DepositHash: h(deposit), PickupHash: h(pickup), CourierHash: h(courier)}
}

// reopen closes s and opens its file again with other keys and a metrics set.
func reopen(t *testing.T, s *store.Store, set *metrics.Set, opt func(*store.Config)) *store.Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	cfg := testConfig(t)
	cfg.Path, cfg.Metrics = store.PathOf(s), set
	opt(&cfg)
	return openStore(t, cfg, true)
}

func TestKeyRotationKeepsReservations(t *testing.T) {
	sA := openTestStore(t, func(c *store.Config) { c.CodeKey = []byte(keyA) })
	if _, err := sA.EnsureDoors(3, "M"); err != nil {
		t.Fatal(err)
	}
	upsert(t, sA, t0(), newRes("R0", 1, dep0, pick0, cour0))          // plain codes, hashed under A
	upsert(t, sA, t0(), hashed("R1", 1, 2, keyA, dep1, pick1, cour1)) // hashes made under A

	set := metrics.NewSet()
	s := reopen(t, sA, set, func(c *store.Config) { c.CodeKey, c.PreviousCodeKey = []byte(keyB), []byte(keyA) })
	matches := set.GetOrCreateCounter(previousMatches)
	f := func(code, want string, wantMatches uint64) {
		t.Helper()
		if got := lookup(t, s, code); got != want {
			t.Errorf("LookupCode(%s): got %q; want %q", code, got, want)
		}
		if got := matches.Get(); got != wantMatches {
			t.Errorf("after LookupCode(%s): %s = %d; want %d", code, previousMatches, got, wantMatches)
		}
	}
	f(dep0, "R0/deposit", 1)
	f(pick1, "R1/pickup", 2)
	f("999999999999", "", 2)

	// The back-end re-sends R1 under B; a new reservation's plain codes are
	// hashed under B. Neither needs the previous key any more.
	upsert(t, s, t0(), hashed("R1", 2, 2, keyB, dep1, pick1, cour1))
	upsert(t, s, t0(), newRes("R2", 3, dep2, pick2, cour2))
	f(pick1, "R1/pickup", 2)
	f(dep2, "R2/deposit", 2)
	f(dep0, "R0/deposit", 3)

	// The overlap is over: R0, never re-sent, is hashed under A only.
	s = reopen(t, s, set, func(c *store.Config) { c.CodeKey = []byte(keyB) })
	f(dep0, "", 3)
	f(pick1, "R1/pickup", 3)
	f(dep2, "R2/deposit", 3)
}

func TestCurrentKeyWinsOverThePrevious(t *testing.T) {
	s := openTestStore(t, func(c *store.Config) { c.CodeKey, c.PreviousCodeKey = []byte(keyB), []byte(keyA) })
	if _, err := s.EnsureDoors(2, "M"); err != nil {
		t.Fatal(err)
	}
	// The same deposit code under each key, for two reservations: the
	// back-end's newer hash (under the current key) decides.
	upsert(t, s, t0(), hashed("R-old", 1, 1, keyA, dep0, pick0, cour0))
	upsert(t, s, t0(), hashed("R-new", 1, 2, keyB, dep0, pick1, cour1))
	if got := lookup(t, s, dep0); got != "R-new/deposit" {
		t.Fatalf("LookupCode(dep0): got %q; want %q", got, "R-new/deposit")
	}
	if got := lookup(t, s, pick0); got != "R-old/pickup" {
		t.Fatalf("LookupCode(pick0): got %q; want %q", got, "R-old/pickup")
	}
}

func TestPreviousKeyEndsAtItsTime(t *testing.T) {
	f := func(until time.Time, want string) {
		t.Helper()
		s := openTestStore(t, func(c *store.Config) {
			c.CodeKey, c.PreviousCodeKey, c.PreviousCodeKeyUntil = []byte(keyB), []byte(keyA), until
		})
		if _, err := s.EnsureDoors(1, "M"); err != nil {
			t.Fatal(err)
		}
		upsert(t, s, t0(), hashed("R0", 1, 1, keyA, dep0, pick0, cour0))
		if got := lookup(t, s, dep0); got != want {
			t.Errorf("until %s: LookupCode(dep0): got %q; want %q", until, got, want)
		}
	}
	f(time.Time{}, "R0/deposit") // no end: until the key is removed
	f(time.Now().Add(24*time.Hour), "R0/deposit")
	f(time.Now().Add(-time.Second), "")
}

func TestShortPreviousKeyIsRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.PreviousCodeKey = []byte("short")
	if s, err := store.Open(cfg); err == nil {
		s.Close()
		t.Fatal("Open accepted a 5-byte previous code key")
	}
}
