package store

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// Code is one code of a reservation, as stored: its keyed hash and when its
// first door cycle closed (the start of its grace period).
type Code struct {
	Hash   []byte    `json:"hash"`
	UsedAt time.Time `json:"used_at,omitzero"`
}

// Reservation is a parcel as the locker keeps it.
type Reservation struct {
	ID        string           `json:"id"`
	Version   uint64           `json:"version"`
	Door      int              `json:"door"`
	Partner   string           `json:"partner,omitempty"`
	User      string           `json:"user,omitempty"`
	Status    string           `json:"status"`
	ExpiresAt time.Time        `json:"expires_at,omitzero"`
	Codes     map[string]*Code `json:"codes"`
	UpdatedAt time.Time        `json:"updated_at"`
}

// State is r as the locker reports it (snapshot, pages): without its codes.
func (r *Reservation) State() contract.ReservationState {
	st := contract.ReservationState{ID: r.ID, Version: r.Version, Door: r.Door, Partner: r.Partner, User: r.User,
		Status: r.Status, ExpiresAt: r.ExpiresAt, UpdatedAt: r.UpdatedAt}
	for kind, c := range r.Codes {
		if !c.UsedAt.IsZero() {
			if st.UsedAt == nil {
				st.UsedAt = map[string]time.Time{}
			}
			st.UsedAt[kind] = c.UsedAt
		}
	}
	return st
}

// Active reports whether the reservation holds its door (arriving or stored).
func (r *Reservation) Active() bool {
	return r.Status == contract.StatusArriving || r.Status == contract.StatusStored
}

var kinds = []string{contract.KindDeposit, contract.KindPickup, contract.KindCourier}

func kindByte(kind string) byte {
	switch kind {
	case contract.KindDeposit:
		return 'd'
	case contract.KindPickup:
		return 'p'
	}
	return 'c'
}

func kindOf(b byte) string {
	switch b {
	case 'd':
		return contract.KindDeposit
	case 'p':
		return contract.KindPickup
	}
	return contract.KindCourier
}

func getReservation(tx *bolt.Tx, id string) (*Reservation, error) {
	var r Reservation
	ok, err := getJSON(tx.Bucket(bucketReservations), []byte(id), &r)
	if err != nil || !ok {
		return nil, err
	}
	return &r, nil
}

// Reservation returns a reservation by id, or ErrNotFound.
func (s *Store) Reservation(id string) (*Reservation, error) {
	var r *Reservation
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = getReservation(tx, id)
		return err
	})
	if err == nil && r == nil {
		return nil, fmt.Errorf("reservation %s: %w", id, ErrNotFound)
	}
	return r, err
}

// LookupCode finds the reservation with a code: one index lookup by the
// code's keyed hash, then a constant-time comparison with the stored hash.
// During a key rotation a code not found under the current key is looked up
// the same way under the previous one, which the back-end's hashes may still
// be made with; such a match is counted and logged. It returns nil, "" when no
// reservation has the code.
func (s *Store) LookupCode(code string) (*Reservation, string, error) {
	hashes := [][]byte{s.HashCode(code)}
	if prev := s.previousKey(time.Now()); prev != nil {
		hashes = append(hashes, HashCode(prev, code))
	}
	var r *Reservation
	var kind string
	underPrevious := false
	err := s.db.View(func(tx *bolt.Tx) error {
		for i, h := range hashes {
			res, k, err := lookupHash(tx, h)
			if err != nil || res != nil {
				r, kind, underPrevious = res, k, i > 0
				return err
			}
		}
		return nil
	})
	if err == nil && underPrevious {
		s.previousMatches.Inc()
		s.log.Info("a code matched under the previous code key: the back-end has not re-sent this reservation's hashes under the current key yet",
			"reservation", r.ID, "kind", kind)
	}
	return r, kind, err
}

// lookupHash finds the reservation and kind whose code has hash h.
func lookupHash(tx *bolt.Tx, h []byte) (*Reservation, string, error) {
	v := tx.Bucket(bucketCodes).Get(h)
	if len(v) < 2 {
		return nil, "", nil
	}
	res, err := getReservation(tx, string(v[1:]))
	if err != nil || res == nil {
		return nil, "", err
	}
	k := kindOf(v[0])
	if c := res.Codes[k]; c != nil && hmac.Equal(c.Hash, h) {
		return res, k, nil
	}
	return nil, "", nil
}

// codeLive reports whether a reservation's code can still open its door now or
// later: the reservation is active, or the code is within its grace period.
func codeLive(r *Reservation, kind string, now time.Time, grace time.Duration) bool {
	if r.Active() {
		return true
	}
	c := r.Codes[kind]
	return c != nil && !c.UsedAt.IsZero() && now.Sub(c.UsedAt) < grace
}

// UpsertReservation applies a downstream reservation upsert and its ack.
func (s *Store) UpsertReservation(now time.Time, msgID string, in contract.Reservation, grace time.Duration) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error { return s.upsertReservation(tx, now, in, grace) })
}

// apply runs a downstream change and appends its ack in one transaction. When
// the change is rejected, its transaction is rolled back whole and a second one
// commits only the ack with the error; a storage failure returns the error and
// acks nothing, so the message is redelivered.
func (s *Store) apply(now time.Time, msgID string, change func(tx *bolt.Tx, o *Outbox) error) ([]Message, error) {
	msgs, err := s.write(now, func(tx *bolt.Tx, o *Outbox) error {
		if err := change(tx, o); err != nil {
			return err
		}
		return o.Ack(msgID, nil)
	})
	if err == nil || !isRejection(err) {
		return msgs, err
	}
	return s.write(now, func(_ *bolt.Tx, o *Outbox) error { return o.Ack(msgID, err) })
}

// Ack commits the ack of a downstream message that was refused before it
// reached the store (it did not decode, say).
func (s *Store) Ack(now time.Time, msgID string, err error) ([]Message, error) {
	return s.write(now, func(_ *bolt.Tx, o *Outbox) error { return o.Ack(msgID, err) })
}

// Rejection marks an error that answers a downstream message (the message is
// invalid), as opposed to a storage failure.
type Rejection struct{ Err error }

func (r Rejection) Error() string { return r.Err.Error() }
func (r Rejection) Unwrap() error { return r.Err }

func reject(format string, args ...any) error { return Rejection{fmt.Errorf(format, args...)} }

// IsRejection reports whether err answers a downstream message as invalid.
func isRejection(err error) bool {
	var r Rejection
	return errors.As(err, &r)
}

func (s *Store) upsertReservation(tx *bolt.Tx, now time.Time, in contract.Reservation, grace time.Duration) error {
	cur, err := getReservation(tx, in.ID)
	if err != nil {
		return err
	}
	if cur != nil && in.Version <= cur.Version {
		return nil // redelivery or stale update: acknowledged and ignored
	}
	status, err := nextStatus(cur, in)
	if err != nil {
		return err
	}
	next := Reservation{
		ID: in.ID, Version: in.Version, Door: in.Door, Partner: in.Partner, User: in.User,
		Status: status, UpdatedAt: now,
	}
	if in.ExpiresAt != nil {
		next.ExpiresAt = in.ExpiresAt.UTC()
	}
	if next.Codes, err = s.nextCodes(cur, in); err != nil {
		return err
	}
	if next.Active() {
		newDoor := cur == nil || cur.Door != next.Door || !cur.Active()
		if err := s.checkDoor(tx, &next, newDoor); err != nil {
			return err
		}
	}
	if err := s.checkCodes(tx, &next, now, grace); err != nil {
		return err
	}
	return putReservation(tx, cur, &next)
}

// nextStatus returns the status of the reservation in updates cur (nil: a
// new one) to, rejecting a status the back-end may not set and a door change
// once the parcel is in.
func nextStatus(cur *Reservation, in contract.Reservation) (string, error) {
	if cur == nil {
		switch in.Status {
		case "", contract.StatusArriving:
			return contract.StatusArriving, nil
		case contract.StatusCancelled:
			return contract.StatusCancelled, nil
		default:
			return "", reject("reservation %s: a new reservation starts %q, not %q: %w", in.ID, contract.StatusArriving, in.Status, ErrStatusOwned)
		}
	}
	status := cur.Status
	switch {
	case in.Status == "" || in.Status == cur.Status:
	case in.Status == contract.StatusCancelled && cur.Status == contract.StatusArriving:
		status = contract.StatusCancelled
	default:
		return "", reject("reservation %s is %s; the back-end cannot set it to %s: %w", in.ID, cur.Status, in.Status, ErrStatusOwned)
	}
	if in.Door != cur.Door && cur.Status != contract.StatusArriving {
		return "", reject("reservation %s is %s in door %d; its door cannot change: %w", in.ID, cur.Status, cur.Door, ErrStatusOwned)
	}
	return status, nil
}

// nextCodes returns the hashes of in's codes, each kept used if it is used
// in cur, and rejects two kinds given the same code.
func (s *Store) nextCodes(cur *Reservation, in contract.Reservation) (map[string]*Code, error) {
	codes := map[string]*Code{}
	for _, k := range kinds {
		h, err := s.codeHash(in, k)
		if err != nil {
			return nil, err
		}
		c := &Code{Hash: h}
		if cur != nil && cur.Codes[k] != nil {
			// A used code stays used whatever the back-end re-sends for its
			// kind (a hash under a rotated key, a changed code): a re-send
			// never revives a code that SPEC §1 disables for good.
			c.UsedAt = cur.Codes[k].UsedAt
		}
		codes[k] = c
	}
	for i, a := range kinds {
		for _, b := range kinds[i+1:] {
			if bytes.Equal(codes[a].Hash, codes[b].Hash) {
				return nil, reject("reservation %s: its %s and %s codes are the same code; they must differ: %w",
					in.ID, a, b, contract.ErrBadPayload)
			}
		}
	}
	return codes, nil
}

func (s *Store) codeHash(in contract.Reservation, kind string) ([]byte, error) {
	code, hash := in.DepositCode, in.DepositHash
	switch kind {
	case contract.KindPickup:
		code, hash = in.PickupCode, in.PickupHash
	case contract.KindCourier:
		code, hash = in.CourierCode, in.CourierHash
	}
	if code != "" {
		return s.HashCode(code), nil
	}
	h, err := hex.DecodeString(hash)
	if err != nil || len(h) != 32 {
		return nil, reject("reservation %s: %s_hash must be 64 hex digits: %w", in.ID, kind, contract.ErrBadPayload)
	}
	return h, nil
}

// checkDoor validates an active reservation against its door. A disabled
// door refuses only reservations new to it: one already inside stays updatable.
func (s *Store) checkDoor(tx *bolt.Tx, r *Reservation, newDoor bool) error {
	var d contract.Door
	ok, err := getJSON(tx.Bucket(bucketDoors), doorKey(r.Door), &d)
	if err != nil {
		return err
	}
	if !ok {
		return reject("reservation %s: door %d does not exist: %w", r.ID, r.Door, ErrUnknownDoor)
	}
	if other := tx.Bucket(bucketDoorIndex).Get(doorKey(r.Door)); other != nil && string(other) != r.ID {
		return reject("door %d holds reservation %s: %w", r.Door, other, ErrDoorOccupied)
	}
	if d.Disabled && newDoor {
		return reject("reservation %s: door %d is disabled: %w", r.ID, r.Door, ErrDoorDisabled)
	}
	if r.Partner != "" && tx.Bucket(bucketPartners).Get([]byte(r.Partner)) == nil {
		return reject("reservation %s: partner %s does not exist: %w", r.ID, r.Partner, ErrUnknownPartner)
	}
	if d.Partner != "" && d.Partner != r.Partner {
		return reject("reservation %s is for partner %q but door %d is allocated to partner %q: %w",
			r.ID, r.Partner, r.Door, d.Partner, ErrPartnerMismatch)
	}
	return nil
}

// checkCodes refuses a code that is a live code of another reservation.
func (s *Store) checkCodes(tx *bolt.Tx, r *Reservation, now time.Time, grace time.Duration) error {
	idx := tx.Bucket(bucketCodes)
	for _, k := range kinds {
		v := idx.Get(r.Codes[k].Hash)
		if len(v) < 2 || string(v[1:]) == r.ID {
			continue
		}
		other, err := getReservation(tx, string(v[1:]))
		if err != nil {
			return err
		}
		ok := other != nil && other.Codes[kindOf(v[0])] != nil &&
			bytes.Equal(other.Codes[kindOf(v[0])].Hash, r.Codes[k].Hash) && codeLive(other, kindOf(v[0]), now, grace)
		if ok {
			return reject("reservation %s: its %s code is a live code of reservation %s; choose another code: %w",
				r.ID, k, other.ID, ErrCodeInUse)
		}
	}
	return nil
}

// putReservation writes next and moves its door and code index entries from cur.
func putReservation(tx *bolt.Tx, cur, next *Reservation) error {
	idx, doors := tx.Bucket(bucketCodes), tx.Bucket(bucketDoorIndex)
	if cur != nil {
		if err := unindex(tx, cur); err != nil {
			return err
		}
	}
	for _, k := range kinds {
		// An unchanged code whose entry another reservation took over once
		// its grace period was over stays with that reservation.
		if cur != nil && cur.Codes[k] != nil && bytes.Equal(cur.Codes[k].Hash, next.Codes[k].Hash) {
			if v := idx.Get(next.Codes[k].Hash); len(v) > 1 && string(v[1:]) != next.ID {
				continue
			}
		}
		val := append([]byte{kindByte(k)}, next.ID...)
		if err := idx.Put(next.Codes[k].Hash, val); err != nil {
			return err
		}
	}
	if next.Active() {
		if err := doors.Put(doorKey(next.Door), []byte(next.ID)); err != nil {
			return err
		}
	}
	return putJSON(tx.Bucket(bucketReservations), []byte(next.ID), next)
}

// unindex removes a reservation's index entries that still point at it.
func unindex(tx *bolt.Tx, r *Reservation) error {
	idx, doors := tx.Bucket(bucketCodes), tx.Bucket(bucketDoorIndex)
	for _, c := range r.Codes {
		if v := idx.Get(c.Hash); len(v) > 1 && string(v[1:]) == r.ID {
			if err := idx.Delete(c.Hash); err != nil {
				return err
			}
		}
	}
	if v := doors.Get(doorKey(r.Door)); string(v) == r.ID {
		return doors.Delete(doorKey(r.Door))
	}
	return nil
}

// DeleteReservation deletes a reservation that holds no parcel, and acks.
func (s *Store) DeleteReservation(now time.Time, msgID, id string) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error { return deleteReservation(tx, id) })
}

func deleteReservation(tx *bolt.Tx, id string) error {
	cur, err := getReservation(tx, id)
	if err != nil || cur == nil {
		return err // deleting what is not there is done already
	}
	if cur.Status == contract.StatusStored {
		return reject("reservation %s is stored: its parcel is in door %d; it cannot be deleted until collected or returned: %w",
			id, cur.Door, ErrParcelInside)
	}
	if other := tx.Bucket(bucketCycles).Get(doorKey(cur.Door)); other != nil {
		var c Cycle
		if _, err := getJSON(tx.Bucket(bucketCycles), doorKey(cur.Door), &c); err == nil && c.Reservation == id {
			return reject("reservation %s: door %d is open for it; try again once it is closed: %w", id, cur.Door, ErrParcelInside)
		}
	}
	if err := unindex(tx, cur); err != nil {
		return err
	}
	return tx.Bucket(bucketReservations).Delete([]byte(id))
}

// CountByStatus returns the number of reservations in each status.
func (s *Store) CountByStatus() (map[string]int, error) {
	out := map[string]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReservations).ForEach(func(_, v []byte) error {
			var r struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out[r.Status]++
			return nil
		})
	})
	return out, err
}

// Reservations returns every reservation (for snapshots and pages).
func (s *Store) Reservations() ([]Reservation, error) {
	var out []Reservation
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReservations).ForEach(func(_, v []byte) error {
			var r Reservation
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// ActiveReservation returns the active reservation of a door, or nil.
func (s *Store) ActiveReservation(door int) (*Reservation, error) {
	var r *Reservation
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketDoorIndex).Get(doorKey(door))
		if id == nil {
			return nil
		}
		var err error
		r, err = getReservation(tx, string(id))
		return err
	})
	return r, err
}
