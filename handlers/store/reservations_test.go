package store_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// hmacHex is the *_hash a production back-end sends for a code.
func hmacHex(key, code string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
}

func TestUpsertReservationNew(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	exp := t0().Add(72 * time.Hour).In(time.FixedZone("CET", 3600))
	in := newRes("R1", 2, dep0, pick0, cour0)
	in.Partner, in.User, in.ExpiresAt = "acme", "system", &exp
	msgs, err := s.UpsertReservation(t0(), "m-1", in, grace)
	mustOK(t, msgs, err, "m-1")
	if len(msgs) != 1 {
		t.Fatalf("got %d messages %s; want only the ack", len(msgs), dump(msgs))
	}

	r, err := s.Reservation("R1")
	if err != nil {
		t.Fatalf("Reservation: %v", err)
	}
	if r.Status != contract.StatusArriving || r.Door != 2 || r.Version != 1 || r.Partner != "acme" || r.User != "system" {
		t.Fatalf("got %+v; want R1 arriving in door 2, version 1, partner acme, user system", r)
	}
	if !r.ExpiresAt.Equal(exp) || r.ExpiresAt.Location() != time.UTC {
		t.Fatalf("got expires_at %v; want %v in UTC", r.ExpiresAt, exp)
	}
	if !r.UpdatedAt.Equal(t0()) {
		t.Fatalf("got updated_at %v; want %v", r.UpdatedAt, t0())
	}
	f := func(kind, code string) {
		t.Helper()
		c := r.Codes[kind]
		if c == nil || !bytes.Equal(c.Hash, s.HashCode(code)) || !c.UsedAt.IsZero() {
			t.Fatalf("%s code: got %+v; want the unused hash of %s", kind, c, code)
		}
		if got, want := lookup(t, s, code), "R1/"+kind; got != want {
			t.Fatalf("LookupCode(%s): got %q; want %q", code, got, want)
		}
	}
	f("deposit", dep0)
	f("pickup", pick0)
	f("courier", cour0)
	if a, err := s.ActiveReservation(2); err != nil || a == nil || a.ID != "R1" {
		t.Fatalf("ActiveReservation(2): got %+v, %v; want R1", a, err)
	}
	if _, err := s.Reservation("R9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Reservation(R9): got %v; want ErrNotFound", err)
	}
}

func TestUpsertReservationVersions(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	in := newRes("R1", 1, dep0, pick0, cour0)
	in.Version = 3
	upsert(t, s, t0(), in)
	codes := []string{dep0, pick0, cour0, dep1, pick1, cour1}

	// A redelivery (equal version) or a stale update (lower version) is
	// acked ok and changes nothing, even if it would be invalid.
	f := func(msgID string, v uint64, door int) {
		t.Helper()
		before := stateOf(t, s, codes...)
		up := newRes("R1", door, dep1, pick1, cour1)
		up.Version = v
		msgs, err := s.UpsertReservation(t0().Add(time.Hour), msgID, up, grace)
		mustOK(t, msgs, err, msgID)
		if len(msgs) != 1 {
			t.Errorf("%s: got %d messages; want only the ack", msgID, len(msgs))
		}
		sameState(t, before, stateOf(t, s, codes...))
	}
	f("m-equal", 3, 4)
	f("m-lower", 2, 4)
	f("m-lowest", 1, 99)

	up := newRes("R1", 4, dep1, pick1, cour1)
	up.Version = 4
	upsert(t, s, t0().Add(time.Hour), up)
	after := stateOf(t, s, codes...)
	if r := after.Reservations[0]; r.Version != 4 || r.Door != 4 || !r.UpdatedAt.Equal(t0().Add(time.Hour)) {
		t.Fatalf("got %+v; want version 4 in door 4", r)
	}
	want := map[string]string{dep0: "", pick0: "", cour0: "", dep1: "R1/deposit", pick1: "R1/pickup", cour1: "R1/courier"}
	if fmt.Sprint(after.Codes) != fmt.Sprint(want) {
		t.Fatalf("got codes %v; want %v", after.Codes, want)
	}
	if fmt.Sprint(after.Active) != fmt.Sprint(map[int]string{4: "R1"}) {
		t.Fatalf("got active doors %v; want door 4 only", after.Active)
	}
}

// Preparations of the rejection cases: R0 in door 1 with codes dep0, pick0, cour0.
func prepArriving(t *testing.T, s *store.Store) {
	upsert(t, s, t0(), newRes("R0", 1, dep0, pick0, cour0))
}

func prepStored(t *testing.T, s *store.Store) {
	prepArriving(t, s)
	runCycle(t, s, t0().Add(10*time.Minute), 1, "R0", contract.KindDeposit, toStored())
}

// prepDelivered leaves R0 delivered, its pickup code used 5 min before the
// rejection cases run (in its grace period).
func prepDelivered(t *testing.T, s *store.Store) {
	prepStored(t, s)
	runCycle(t, s, t0().Add(55*time.Minute), 1, "R0", contract.KindPickup, toDelivered())
}

func TestUpsertReservationRejects(t *testing.T) {
	now := t0().Add(time.Hour)
	v2 := func(r contract.Reservation) contract.Reservation { r.Version = 2; return r }
	with := func(r contract.Reservation, f func(*contract.Reservation)) contract.Reservation { f(&r); return r }
	r0 := newRes("R0", 1, dep0, pick0, cour0)
	r1 := newRes("R1", 1, dep1, pick1, cour1)
	// Each case runs in its own t.Run, on its own store: one accepted wrongly
	// does not hide the next.
	f := func(name string, prep func(*testing.T, *store.Store), in contract.Reservation, wants ...string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			s := openTestStore(t)
			seed(t, s)
			if prep != nil {
				prep(t, s)
			}
			codes := []string{dep0, pick0, cour0, dep1, pick1, cour1}
			before := stateOf(t, s, codes...)
			msgs, err := s.UpsertReservation(now, "m-bad", in, grace)
			mustReject(t, msgs, err, "m-bad", wants...)
			sameState(t, before, stateOf(t, s, codes...))
		})
	}
	f("unknown door", nil, with(r1, func(r *contract.Reservation) { r.Door = 99 }),
		"reservation R1: door 99 does not exist", store.ErrUnknownDoor.Error())
	f("door holds an arriving parcel", prepArriving, r1,
		"door 1 holds reservation R0", store.ErrDoorOccupied.Error())
	f("door holds a stored parcel", prepStored, r1,
		"door 1 holds reservation R0", store.ErrDoorOccupied.Error())
	f("door moved onto an occupied door", func(t *testing.T, s *store.Store) {
		prepArriving(t, s)
		upsert(t, s, t0(), newRes("R1", 4, dep1, pick1, cour1))
	}, v2(r1), "door 1 holds reservation R0", store.ErrDoorOccupied.Error())
	f("disabled door", nil, with(r1, func(r *contract.Reservation) { r.Door = 3 }),
		"reservation R1: door 3 is disabled", store.ErrDoorDisabled.Error())
	f("unknown partner", nil, with(r1, func(r *contract.Reservation) { r.Partner = "initech" }),
		"reservation R1: partner initech does not exist", store.ErrUnknownPartner.Error())
	f("partner mismatch", nil, with(r1, func(r *contract.Reservation) { r.Door, r.Partner = 2, "globex" }),
		`reservation R1 is for partner "globex" but door 2 is allocated to partner "acme"`, store.ErrPartnerMismatch.Error())
	f("no partner for a partner door", nil, with(r1, func(r *contract.Reservation) { r.Door = 2 }),
		`reservation R1 is for partner "" but door 2 is allocated to partner "acme"`, store.ErrPartnerMismatch.Error())
	f("new reservation already stored", nil, with(r1, func(r *contract.Reservation) { r.Status = contract.StatusStored }),
		`reservation R1: a new reservation starts "arriving", not "stored"`, store.ErrStatusOwned.Error())
	f("new reservation already delivered", nil, with(r1, func(r *contract.Reservation) { r.Status = contract.StatusDelivered }),
		`not "delivered"`, store.ErrStatusOwned.Error())
	f("status past the locker: stored", prepArriving, with(v2(r0), func(r *contract.Reservation) { r.Status = contract.StatusStored }),
		"reservation R0 is arriving; the back-end cannot set it to stored", store.ErrStatusOwned.Error())
	f("status past the locker: delivered", prepStored, with(v2(r0), func(r *contract.Reservation) { r.Status = contract.StatusDelivered }),
		"reservation R0 is stored; the back-end cannot set it to delivered", store.ErrStatusOwned.Error())
	f("status past the locker: returned", prepStored, with(v2(r0), func(r *contract.Reservation) { r.Status = contract.StatusReturned }),
		"reservation R0 is stored; the back-end cannot set it to returned", store.ErrStatusOwned.Error())
	f("status backwards: stored to arriving", prepStored, with(v2(r0), func(r *contract.Reservation) { r.Status = contract.StatusArriving }),
		"reservation R0 is stored; the back-end cannot set it to arriving", store.ErrStatusOwned.Error())
	f("status backwards: delivered to stored", prepDelivered, with(v2(r0), func(r *contract.Reservation) { r.Version, r.Status = 9, contract.StatusStored }),
		"reservation R0 is delivered; the back-end cannot set it to stored", store.ErrStatusOwned.Error())
	f("cancel a stored parcel", prepStored, with(v2(r0), func(r *contract.Reservation) { r.Status = contract.StatusCancelled }),
		"reservation R0 is stored; the back-end cannot set it to cancelled", store.ErrStatusOwned.Error())
	f("door change of a stored parcel", prepStored, with(v2(r0), func(r *contract.Reservation) { r.Door = 4 }),
		"reservation R0 is stored in door 1; its door cannot change", store.ErrStatusOwned.Error())
	f("code live in an arriving reservation", prepArriving, with(r1, func(r *contract.Reservation) { r.Door, r.PickupCode = 4, dep0 }),
		"reservation R1: its pickup code is a live code of reservation R0; choose another code", store.ErrCodeInUse.Error())
	f("code live in a stored reservation, sent as a hash", prepStored, with(r1, func(r *contract.Reservation) {
		r.Door, r.CourierCode, r.CourierHash = 4, "", hmacHex(testKey, cour0)
	}), "reservation R1: its courier code is a live code of reservation R0", store.ErrCodeInUse.Error())
	f("code in its grace period", prepDelivered, with(r1, func(r *contract.Reservation) { r.DepositCode = pick0 }),
		"reservation R1: its deposit code is a live code of reservation R0", store.ErrCodeInUse.Error())
	f("bad hash", nil, with(r1, func(r *contract.Reservation) { r.DepositCode, r.DepositHash = "", "zz" }),
		"reservation R1: deposit_hash must be 64 hex digits", contract.ErrBadPayload.Error())
	f("short hash", nil, with(r1, func(r *contract.Reservation) { r.PickupCode, r.PickupHash = "", hmacHex(testKey, pick1)[:62] }),
		"reservation R1: pickup_hash must be 64 hex digits")
}

func TestUpsertReservationUpdates(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	codes := []string{dep0, pick0, cour0, dep1, pick1, cour1, dep2, pick2, cour2}

	// While arriving, the door may change and the reservation may be cancelled.
	upsert(t, s, t0(), newRes("R0", 1, dep0, pick0, cour0))
	moved := newRes("R0", 4, dep0, pick0, cour0)
	moved.Version = 2
	upsert(t, s, t0(), moved)
	if st := stateOf(t, s); fmt.Sprint(st.Active) != fmt.Sprint(map[int]string{4: "R0"}) {
		t.Fatalf("got active doors %v; want R0 in door 4 only", st.Active)
	}
	cancel := moved
	cancel.Version, cancel.Status = 3, contract.StatusCancelled
	upsert(t, s, t0(), cancel)
	st := stateOf(t, s, codes...)
	if len(st.Active) != 0 || st.Reservations[0].Status != contract.StatusCancelled {
		t.Fatalf("got %+v; want R0 cancelled and no door held", st)
	}
	// A cancelled reservation does not hold its door or its codes.
	upsert(t, s, t0(), newRes("R1", 4, dep0, pick0, cour0))
	if got := lookup(t, s, dep0); got != "R1/deposit" {
		t.Fatalf("LookupCode(dep0): got %q; want %q", got, "R1/deposit")
	}
	// Resending the cancelled reservation's old codes is now refused.
	again := cancel
	again.Version = 4
	msgs, err := s.UpsertReservation(t0(), "m-again", again, grace)
	mustReject(t, msgs, err, "m-again", "its deposit code is a live code of reservation R1")

	// A new reservation may arrive already cancelled, door unchecked.
	gone := newRes("R2", 99, dep2, pick2, cour2)
	gone.Status = contract.StatusCancelled
	upsert(t, s, t0(), gone)

	// Codes, expiry and the user of a stored reservation may change; the
	// used time of a code that did not change is kept.
	s2 := openTestStore(t)
	seed(t, s2)
	upsert(t, s2, t0(), newRes("R0", 1, dep0, pick0, cour0))
	runCycle(t, s2, t0().Add(time.Minute), 1, "R0", contract.KindDeposit, toStored())
	exp := t0().Add(48 * time.Hour)
	up := newRes("R0", 1, dep0, pick1, cour0)
	up.Version, up.ExpiresAt, up.User, up.Status = 2, &exp, "support", contract.StatusStored
	upsert(t, s2, t0().Add(2*time.Minute), up)
	r, err := s2.Reservation("R0")
	if err != nil {
		t.Fatalf("Reservation: %v", err)
	}
	if r.Status != contract.StatusStored || !r.ExpiresAt.Equal(exp) || r.User != "support" {
		t.Fatalf("got %+v; want R0 stored, expiring %v, user support", r, exp)
	}
	if got := r.Codes["deposit"].UsedAt; !got.Equal(t0().Add(time.Minute)) {
		t.Fatalf("deposit used_at: got %v; want %v", got, t0().Add(time.Minute))
	}
	if got, want := lookup(t, s2, pick1)+" "+lookup(t, s2, pick0), "R0/pickup "; got != want {
		t.Fatalf("pickup codes: got %q; want %q", got, want)
	}
}

func TestUpsertReservationCodeAfterGrace(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	prepDelivered(t, s) // pickup used at t0+55m
	afterGrace := t0().Add(55*time.Minute + grace)
	upsert(t, s, afterGrace, newRes("R1", 1, pick0, pick1, cour1))
	if got := lookup(t, s, pick0); got != "R1/deposit" {
		t.Fatalf("LookupCode(pick0): got %q; want %q", got, "R1/deposit")
	}
	if a, err := s.ActiveReservation(1); err != nil || a == nil || a.ID != "R1" {
		t.Fatalf("ActiveReservation(1): got %+v, %v; want R1", a, err)
	}
}

func TestUpsertReservationHashes(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	in := contract.Reservation{ID: "R1", Version: 1, Door: 1,
		DepositHash: hmacHex(testKey, dep0), PickupHash: strings.ToUpper(hmacHex(testKey, pick0)), CourierCode: cour0}
	upsert(t, s, t0(), in)
	f := func(code, want string) {
		t.Helper()
		if got := lookup(t, s, code); got != want {
			t.Errorf("LookupCode(%q): got %q; want %q", code, got, want)
		}
	}
	f(dep0, "R1/deposit")
	f(pick0, "R1/pickup")
	f(cour0, "R1/courier")
	f(dep1, "")

	// A hash made under another key does not match the code.
	other := contract.Reservation{ID: "R2", Version: 1, Door: 4,
		DepositHash: hmacHex("another-locker-key-0002", dep1), PickupCode: pick1, CourierCode: cour1}
	upsert(t, s, t0(), other)
	f(dep1, "")
	f(pick1, "R2/pickup")
}

func TestCodesNeverStoredInPlain(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg, true)
	seed(t, s)
	plain := []string{dep0, pick0, cour0, dep1, pick1, cour1, dep2, pick2}
	upsert(t, s, t0(), newRes("R0", 1, dep0, pick0, cour0))
	runCycle(t, s, t0().Add(time.Minute), 1, "R0", contract.KindDeposit, toStored())
	up := newRes("R0", 1, dep0, pick1, cour1)
	up.Version = 2
	upsert(t, s, t0().Add(2*time.Minute), up)
	runCycle(t, s, t0().Add(3*time.Minute), 1, "R0", contract.KindPickup, toDelivered())
	msgs, err := s.UpsertReservation(t0().Add(4*time.Minute), "m-taken", newRes("R1", 4, pick1, dep2, pick2), grace)
	mustReject(t, msgs, err, "m-taken", "live code")
	if _, err := s.Snapshot(t0().Add(5*time.Minute), "m-sync"); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	raw, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatalf("read the database: %v", err)
	}
	for _, code := range plain {
		if bytes.Contains(raw, []byte(code)) {
			t.Errorf("the database file contains code %s in plain", code)
		}
	}
	if !bytes.Contains(raw, []byte("R0")) {
		t.Fatalf("the database file does not contain the reservation id: the scan reads the wrong file")
	}
}

func TestLookupCode(t *testing.T) {
	for _, n := range []int{10, 10_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			if n > 10 && testing.Short() {
				t.Skip("loads 10 000 reservations")
			}
			s := openTestStore(t)
			loadReservations(t, s, n)
			f := func(code, want string) {
				t.Helper()
				if got := lookup(t, s, code); got != want {
					t.Errorf("LookupCode(%q): got %q; want %q", code, got, want)
				}
			}
			for _, i := range []int{1, 2, n / 2, n - 1, n} {
				id := fmt.Sprintf("R%d", i)
				f(codeOf('1', i), id+"/deposit")
				f(codeOf('2', i), id+"/pickup")
				f(codeOf('3', i), id+"/courier")
			}
			f(codeOf('1', n+1), "")
			f(codeOf('4', 1), "")
			f("0000", "")
			f("", "")
		})
	}
}

// codeOf is reservation i's code of a kind ('1' deposit, '2' pickup, '3' courier).
func codeOf(kind byte, i int) string { return fmt.Sprintf("%c%07d", kind, i) }

// loadReservations gives the locker doors 1..n and reservations R1..Rn, one
// per door, through UpsertReservation's checks, a thousand per commit.
func loadReservations(tb testing.TB, s *store.Store, n int) {
	tb.Helper()
	if _, err := s.EnsureDoors(n, "M"); err != nil {
		tb.Fatalf("EnsureDoors: %v", err)
	}
	rs := make([]contract.Reservation, n)
	for i := range rs {
		rs[i] = newRes(fmt.Sprintf("R%d", i+1), i+1, codeOf('1', i+1), codeOf('2', i+1), codeOf('3', i+1))
	}
	if err := store.LoadReservations(s, t0(), rs, grace); err != nil {
		tb.Fatalf("LoadReservations: %v", err)
	}
}

func TestDeleteReservation(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	codes := []string{dep0, pick0, cour0, dep1, pick1, cour1, dep2, pick2, cour2}
	upsert(t, s, t0(), newRes("R0", 1, dep0, pick0, cour0))
	upsert(t, s, t0(), newRes("R1", 4, dep1, pick1, cour1))
	r2 := newRes("R2", 2, dep2, pick2, cour2)
	r2.Partner = "acme"
	upsert(t, s, t0(), r2)

	// Arriving: deleted with its codes and its door.
	msgs, err := s.DeleteReservation(t0(), "m-del0", "R0")
	mustOK(t, msgs, err, "m-del0")
	st := stateOf(t, s, codes...)
	if st.Codes[dep0]+st.Codes[pick0]+st.Codes[cour0] != "" || st.Active[1] != "" {
		t.Fatalf("got %+v; want R0's codes and door gone", st)
	}
	if _, err := s.Reservation("R0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Reservation(R0): got %v; want ErrNotFound", err)
	}
	upsert(t, s, t0(), newRes("R3", 1, dep0, pick0, cour0))

	// Deleting what is not there is done already.
	msgs, err = s.DeleteReservation(t0(), "m-del-none", "R0")
	mustOK(t, msgs, err, "m-del-none")

	// Stored: its parcel is inside.
	runCycle(t, s, t0().Add(time.Minute), 4, "R1", contract.KindDeposit, toStored())
	before := stateOf(t, s, codes...)
	msgs, err = s.DeleteReservation(t0(), "m-del1", "R1")
	mustReject(t, msgs, err, "m-del1", "reservation R1 is stored: its parcel is in door 4", store.ErrParcelInside.Error())
	sameState(t, before, stateOf(t, s, codes...))

	// Arriving with its door open: refused until the door closes.
	if _, err := s.DoorOpened(t0(), store.Cycle{Door: 2, Reservation: "R2", Kind: contract.KindDeposit, OpenedAt: t0()}, nil); err != nil {
		t.Fatalf("DoorOpened: %v", err)
	}
	before = stateOf(t, s, codes...)
	msgs, err = s.DeleteReservation(t0(), "m-del2", "R2")
	mustReject(t, msgs, err, "m-del2", "reservation R2: door 2 is open for it", store.ErrParcelInside.Error())
	sameState(t, before, stateOf(t, s, codes...))

	// Delivered: deleted.
	runCycle(t, s, t0().Add(2*time.Minute), 4, "R1", contract.KindPickup, toDelivered())
	msgs, err = s.DeleteReservation(t0(), "m-del1b", "R1")
	mustOK(t, msgs, err, "m-del1b")
	if got := lookup(t, s, pick1); got != "" {
		t.Fatalf("LookupCode(pick1): got %q; want none", got)
	}
}

func TestCountByStatus(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	upsert(t, s, t0(), newRes("R0", 1, dep0, pick0, cour0))
	upsert(t, s, t0(), newRes("R1", 4, dep1, pick1, cour1))
	runCycle(t, s, t0(), 4, "R1", contract.KindDeposit, toStored())
	got, err := s.CountByStatus()
	if want := "map[arriving:1 stored:1]"; err != nil || fmt.Sprint(got) != want {
		t.Fatalf("got %v, %v; want %s", got, err, want)
	}
}

func TestDisabledDoorKeepsItsParcelUpdatable(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	upsert(t, s, t0(), newRes("R1", 1, "111111", "222222", "333333"))
	msgs, err := s.UpsertDoor(t0(), "d-off", contract.Door{ID: 1, Disabled: true})
	mustOK(t, msgs, err, "d-off")
	later := newRes("R1", 1, "111111", "222222", "333333")
	later.Version = 2
	exp := t0().Add(48 * time.Hour)
	later.ExpiresAt = &exp
	msgs, err = s.UpsertReservation(t0(), "m-exp", later, time.Minute)
	mustOK(t, msgs, err, "m-exp")
	msgs, err = s.UpsertReservation(t0(), "m-new", newRes("R2", 1, "444444", "555555", "666666"), time.Minute)
	mustReject(t, msgs, err, "m-new", "door 1")
}

func TestPlainCodeEqualToAnotherCodesHashIsRefused(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	r := newRes("R1", 1, "111111", "222222", "")
	r.CourierHash = hex.EncodeToString(s.HashCode("111111"))
	msgs, err := s.UpsertReservation(t0(), "m-dup", r, time.Minute)
	mustReject(t, msgs, err, "m-dup", "deposit and courier codes are the same code")
}

func TestPartnerWithAnActiveReservationCannotBeDeleted(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	msgs, err := s.UpsertPartner(t0(), "p-1", contract.Partner{ID: "zeta"})
	mustOK(t, msgs, err, "p-1")
	r := newRes("R1", 4, "111111", "222222", "333333")
	r.Partner = "zeta"
	upsert(t, s, t0(), r)
	msgs, err = s.DeletePartner(t0(), "p-del", "zeta")
	mustReject(t, msgs, err, "p-del", "partner zeta has reservation R1")
}

// TestAUsedCodeStaysUsedWhateverIsResent: the back-end re-sends a stored
// parcel's codes (a new deposit code, or hashes under a rotated key): the
// deposit code was used and stays used, so no re-send revives it.
func TestAUsedCodeStaysUsedWhateverIsResent(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	upsert(t, s, t0(), newRes("R0", 1, dep0, pick0, cour0))
	runCycle(t, s, t0().Add(time.Minute), 1, "R0", contract.KindDeposit, toStored())
	up := newRes("R0", 1, dep1, pick0, cour0)
	up.Version, up.Status = 2, contract.StatusStored
	upsert(t, s, t0().Add(2*time.Minute), up)
	r, err := s.Reservation("R0")
	if err != nil {
		t.Fatalf("Reservation: %v", err)
	}
	if got := r.Codes[contract.KindDeposit].UsedAt; !got.Equal(t0().Add(time.Minute)) {
		t.Fatalf("deposit used_at after a new deposit code: got %v; want %v (still used)", got, t0().Add(time.Minute))
	}
	if got := r.Codes[contract.KindPickup].UsedAt; !got.IsZero() {
		t.Fatalf("pickup used_at: got %v; want unused", got)
	}
}
