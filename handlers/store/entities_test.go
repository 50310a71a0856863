package store_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

func TestDoors(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	r := newRes("R1", 2, dep0, pick0, cour0)
	r.Partner = "acme"
	upsert(t, s, t0(), r)
	codes := []string{dep0, pick0, cour0}

	reject := func(msgID string, msgs []store.Message, err error, wants ...string) {
		t.Helper()
		mustReject(t, msgs, err, msgID, wants...)
	}
	before := stateOf(t, s, codes...)
	msgs, err := s.UpsertDoor(t0(), "m-d1", contract.Door{ID: 5, Partner: "initech"})
	reject("m-d1", msgs, err, "door 5: partner initech does not exist", store.ErrUnknownPartner.Error())
	sameState(t, before, stateOf(t, s, codes...))

	before = stateOf(t, s, codes...)
	msgs, err = s.UpsertDoor(t0(), "m-d2", contract.Door{ID: 2, Partner: "globex"})
	reject("m-d2", msgs, err, `door 2 holds reservation R1 of partner "acme"; it cannot be allocated to partner "globex" now`, store.ErrPartnerMismatch.Error())
	sameState(t, before, stateOf(t, s, codes...))

	// The same partner, or no partner, is fine while the door holds a parcel.
	msgs, err = s.UpsertDoor(t0(), "m-d3", contract.Door{ID: 2, Size: "XL", Partner: "acme"})
	mustOK(t, msgs, err, "m-d3")
	if d, ok, err := s.Door(2); err != nil || !ok || d != (contract.Door{ID: 2, Size: "XL", Partner: "acme"}) {
		t.Fatalf("Door(2): got %+v, %v, %v; want the XL door of acme", d, ok, err)
	}

	before = stateOf(t, s, codes...)
	msgs, err = s.DeleteDoor(t0(), "m-d4", 2)
	reject("m-d4", msgs, err, "door 2 holds reservation R1; delete or finish it first", store.ErrParcelInside.Error())
	sameState(t, before, stateOf(t, s, codes...))

	// An open door without a reservation (support) cannot be deleted either.
	if _, err := s.DoorOpened(t0(), store.Cycle{Door: 4, Kind: store.KindSupport, OpenedAt: t0()}, nil); err != nil {
		t.Fatalf("DoorOpened: %v", err)
	}
	before = stateOf(t, s, codes...)
	msgs, err = s.DeleteDoor(t0(), "m-d5", 4)
	reject("m-d5", msgs, err, "door 4 is open; try again once it is closed", store.ErrParcelInside.Error())
	sameState(t, before, stateOf(t, s, codes...))

	msgs, err = s.DeleteDoor(t0(), "m-d6", 1)
	mustOK(t, msgs, err, "m-d6")
	if _, ok, err := s.Door(1); ok || err != nil {
		t.Fatalf("Door(1) after delete: got %v, %v; want no door", ok, err)
	}
	msgs, err = s.DeleteDoor(t0(), "m-d7", 1)
	mustOK(t, msgs, err, "m-d7")
	ds, err := s.Doors()
	if err != nil || len(ds) != 3 || ds[0].ID != 2 || ds[1].ID != 3 || ds[2].ID != 4 {
		t.Fatalf("Doors: got %+v, %v; want doors 2, 3, 4 in order", ds, err)
	}
}

func TestEnsureDoors(t *testing.T) {
	s := openTestStore(t)
	if ok, err := s.EnsureDoors(0, "M"); ok || err != nil {
		t.Fatalf("EnsureDoors(0): got %v, %v; want false, nil", ok, err)
	}
	if ok, err := s.EnsureDoors(12, "M"); !ok || err != nil {
		t.Fatalf("EnsureDoors(12): got %v, %v; want true, nil", ok, err)
	}
	if ok, err := s.EnsureDoors(20, "L"); ok || err != nil {
		t.Fatalf("EnsureDoors on a locker with doors: got %v, %v; want false, nil", ok, err)
	}
	ds, err := s.Doors()
	if err != nil || len(ds) != 12 || ds[11] != (contract.Door{ID: 12, Size: "M"}) {
		t.Fatalf("Doors: got %+v, %v; want 12 M doors", ds, err)
	}
}

func TestPartnersAndUsers(t *testing.T) {
	s := openTestStore(t)
	seed(t, s)
	before := stateOf(t, s)
	msgs, err := s.DeletePartner(t0(), "m-p1", "acme")
	mustReject(t, msgs, err, "m-p1", "partner acme has door 2 allocated; reallocate it first", store.ErrInUse.Error())
	sameState(t, before, stateOf(t, s))

	msgs, err = s.UpsertDoor(t0(), "m-p2", contract.Door{ID: 2, Size: "L"})
	mustOK(t, msgs, err, "m-p2")
	msgs, err = s.DeletePartner(t0(), "m-p3", "acme")
	mustOK(t, msgs, err, "m-p3")
	msgs, err = s.DeletePartner(t0(), "m-p4", "acme")
	mustOK(t, msgs, err, "m-p4")
	// The partner is gone: a door can no longer be allocated to it.
	msgs, err = s.UpsertDoor(t0(), "m-p5", contract.Door{ID: 2, Partner: "acme"})
	mustReject(t, msgs, err, "m-p5", "partner acme does not exist")
	msgs, err = s.UpsertPartner(t0(), "m-p6", contract.Partner{ID: "globex", Name: "Globex Corp"})
	mustOK(t, msgs, err, "m-p6")

	for _, u := range []contract.User{{ID: "u1", Name: "Zoë", Role: "courier"}, {ID: "u2", Role: "support"}} {
		msgs, err = s.UpsertUser(t0(), "m-"+u.ID, u)
		mustOK(t, msgs, err, "m-"+u.ID)
	}
	msgs, err = s.DeleteUser(t0(), "m-u-del", "u2")
	mustOK(t, msgs, err, "m-u-del")
	msgs, err = s.DeleteUser(t0(), "m-u-del-again", "u2")
	mustOK(t, msgs, err, "m-u-del-again")

	snap := snapshotOf(t, s, t0(), "m-sync")
	if want := []contract.Partner{{ID: "globex", Name: "Globex Corp"}}; !reflect.DeepEqual(snap.Partners, want) {
		t.Fatalf("partners: got %+v; want %+v", snap.Partners, want)
	}
	if want := []contract.User{{ID: "u1", Name: "Zoë", Role: "courier"}}; !reflect.DeepEqual(snap.Users, want) {
		t.Fatalf("users: got %+v; want %+v", snap.Users, want)
	}
}

// snapshotOf commits a snapshot and returns it decoded, checking that the
// call committed the snapshot and then its ack.
func snapshotOf(t testing.TB, s *store.Store, now time.Time, msgID string) store.Snapshot {
	t.Helper()
	msgs, err := s.Snapshot(now, msgID)
	mustOK(t, msgs, err, msgID)
	if len(msgs) != 2 || msgs[0].Topic != contract.TopicSnapshot || msgs[1].Topic != contract.TopicAcks {
		t.Fatalf("Snapshot: got %s; want the snapshot and its ack", dump(msgs))
	}
	var snap store.Snapshot
	if err := json.Unmarshal(msgs[0].Payload, &snap); err != nil {
		t.Fatalf("snapshot %s: %v", msgs[0].Payload, err)
	}
	if snap.MsgID != msgID || !snap.At.Equal(now) || snap.LastEventID != store.EventID(msgs[0].Seq) {
		t.Fatalf("snapshot: got msg_id %q, at %v, last_event_id %q; want %q, %v, %q",
			snap.MsgID, snap.At, snap.LastEventID, msgID, now, store.EventID(msgs[0].Seq))
	}
	return snap
}

func TestSnapshot(t *testing.T) {
	s := openTestStore(t)
	empty := snapshotOf(t, s, t0(), "m-0")
	if empty.Doors == nil || empty.Partners == nil || empty.Users == nil || empty.Reservations == nil || empty.OpenDoors == nil {
		t.Fatalf("empty snapshot: got %+v; want empty lists, not null", empty)
	}

	seed(t, s)
	exp := t0().Add(24 * time.Hour)
	r := newRes("R1", 2, dep0, pick0, cour0)
	r.Partner, r.User, r.ExpiresAt = "acme", "system", &exp
	upsert(t, s, t0(), r)
	storedAt := t0().Add(time.Minute)
	closeMsgs := runCycle(t, s, storedAt, 2, "R1", contract.KindDeposit, toStored())
	upsert(t, s, t0(), newRes("R2", 1, dep1, pick1, cour1))
	open := store.Cycle{Door: 1, Reservation: "R2", Kind: contract.KindDeposit, RequestID: "r-9", OpenedAt: t0().Add(2 * time.Minute)}
	if _, err := s.DoorOpened(open.OpenedAt, open, nil); err != nil {
		t.Fatalf("DoorOpened: %v", err)
	}

	now := t0().Add(3 * time.Minute)
	msgs, err := s.Snapshot(now, "m-1")
	mustOK(t, msgs, err, "m-1")
	snap := snapshotOf(t, s, now, "m-2")
	if snap.LastEventID <= store.EventID(closeMsgs[0].Seq) {
		t.Fatalf("last_event_id %q; want it above the last event %q", snap.LastEventID, store.EventID(closeMsgs[0].Seq))
	}
	want := []contract.ReservationState{
		{ID: "R1", Version: 1, Door: 2, Partner: "acme", User: "system", Status: contract.StatusStored, ExpiresAt: exp,
			UsedAt: map[string]time.Time{"deposit": storedAt}, UpdatedAt: storedAt},
		{ID: "R2", Version: 1, Door: 1, Status: contract.StatusArriving, UpdatedAt: t0()},
	}
	if !reflect.DeepEqual(snap.Reservations, want) {
		t.Fatalf("reservations:\ngot  %+v\nwant %+v", snap.Reservations, want)
	}
	if ds, _ := s.Doors(); !reflect.DeepEqual(snap.Doors, ds) {
		t.Fatalf("doors: got %+v; want %+v", snap.Doors, ds)
	}
	if len(snap.Partners) != 2 || len(snap.Users) != 0 {
		t.Fatalf("got partners %+v, users %+v; want acme and globex, no users", snap.Partners, snap.Users)
	}
	if !reflect.DeepEqual(snap.OpenDoors, []store.Cycle{open}) {
		t.Fatalf("open doors: got %+v; want [%+v]", snap.OpenDoors, open)
	}

	// No code hash leaves the locker, in any encoding.
	raw := msgs[0].Payload
	if bytes.Contains(raw, []byte("hash")) || bytes.Contains(raw, []byte("codes")) {
		t.Fatalf("snapshot %s names code hashes", raw)
	}
	for _, c := range []string{dep0, pick0, cour0, dep1, pick1, cour1} {
		h := s.HashCode(c)
		for _, enc := range []string{c, hex.EncodeToString(h), base64.StdEncoding.EncodeToString(h), base64.RawURLEncoding.EncodeToString(h)} {
			if bytes.Contains(raw, []byte(enc)) {
				t.Fatalf("snapshot %s contains %q, a form of code %s", raw, enc, c)
			}
		}
	}
}

func TestPrune(t *testing.T) {
	var drops dropLog
	s := openTestStore(t, func(c *store.Config) {
		c.Retention = 24 * time.Hour
		c.OnDrop = drops.record
	})
	seed(t, s)
	day := 24 * time.Hour
	// R0: delivered at t0, its deposit code taken over by R3 after its grace period.
	upsert(t, s, t0(), newRes("R0", 1, dep0, pick0, cour0))
	runCycle(t, s, t0(), 1, "R0", contract.KindDeposit, toStored())
	runCycle(t, s, t0(), 1, "R0", contract.KindPickup, toDelivered())
	// R1: cancelled at t0.
	c1 := newRes("R1", 4, dep1, pick1, cour1)
	c1.Status = contract.StatusCancelled
	upsert(t, s, t0(), c1)
	// R2: stored at t0, kept whatever its age.
	upsert(t, s, t0(), newRes("R2", 4, dep2, pick2, cour2))
	runCycle(t, s, t0(), 4, "R2", contract.KindDeposit, toStored())
	// R3: arriving since t0+1h with R0's old deposit code.
	upsert(t, s, t0().Add(time.Hour), newRes("R3", 1, dep0, "410000000000", "420000000000"))
	// R4: delivered 2 h before the prune: younger than the retention.
	r4 := newRes("R4", 2, "510000000000", "520000000000", "530000000000")
	r4.Partner = "acme"
	upsert(t, s, t0().Add(day-time.Hour), r4)
	runCycle(t, s, t0().Add(day-time.Hour), 2, "R4", contract.KindDeposit, toStored())
	runCycle(t, s, t0().Add(day-time.Hour), 2, "R4", contract.KindPickup, toDelivered())

	n, err := s.Prune(t0().Add(day + time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("Prune: got %d, %v; want 2 (R0 and R1)", n, err)
	}
	st := stateOf(t, s, dep0, pick0, cour0, dep1, pick1, cour1, dep2)
	var ids []string
	for _, r := range st.Reservations {
		ids = append(ids, r.ID)
	}
	if want := []string{"R2", "R3", "R4"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("after Prune: got %v; want %v", ids, want)
	}
	wantCodes := map[string]string{dep0: "R3/deposit", pick0: "", cour0: "", dep1: "", pick1: "", cour1: "", dep2: "R2/deposit"}
	if !reflect.DeepEqual(st.Codes, wantCodes) {
		t.Fatalf("codes after Prune: got %v; want %v", st.Codes, wantCodes)
	}
	if got := drops.take(); len(got) != 0 {
		t.Fatalf("OnDrop: got %v; want no outbox drops within the age bound", got)
	}
	audit, err := s.Audit(100)
	if err != nil || len(audit) != 2 || audit[0].Reservation != "R4" || audit[1].Reservation != "R4" {
		t.Fatalf("Audit after Prune: got %+v, %v; want only R4's two openings", audit, err)
	}
}
