package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// CheckFile checks the database file at path, without writing to it: bbolt's
// own consistency check (every page reachable once, no page both free and
// used), then the store's invariants: every code index entry points at a
// reservation that has that code, every active reservation holds its door
// index entry and its codes' entries, every door index entry points at an
// active reservation of that door, and the outbox's booked size and count are
// the outbox's. It returns every violation found, joined.
//
// It opens the file read-only, so the database must be closed, or open
// read-only by others: a gateway or a store holding it open for writing makes
// CheckFile fail after a second instead of waiting. Tests run it after each
// store they open is closed, and after each fault (power cut, full disk).
func CheckFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return fmt.Errorf("cannot open %q: a running gateway or an open store holds it; close it first, or check a copy taken while it was closed: %w", path, err)
	case err != nil:
		return fmt.Errorf("cannot open %q: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				errs = append(errs, fmt.Errorf("%q has no %s bucket: it is not a locker's database, or the store never opened it", path, b))
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		return errors.Join(checkIndexes(tx), checkOutboxBytes(tx))
	})
}

// checkIndexes checks the code and door indexes against the reservations,
// both ways, and returns every violation found.
func checkIndexes(tx *bolt.Tx) error {
	var errs []error
	codes, doors := tx.Bucket(bucketCodes), tx.Bucket(bucketDoorIndex)
	c := codes.Cursor()
	for h, v := c.First(); h != nil; h, v = c.Next() {
		if len(v) < 2 {
			errs = append(errs, fmt.Errorf("code index %x: value %q is too short", h, v))
			continue
		}
		r, err := getReservation(tx, string(v[1:]))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("code index %x points at %s: %w", h, v[1:], err))
		case r == nil:
			errs = append(errs, fmt.Errorf("code index %x points at missing reservation %s", h, v[1:]))
		default:
			if code := r.Codes[kindOf(v[0])]; code == nil || !bytes.Equal(code.Hash, h) {
				errs = append(errs, fmt.Errorf("code index %x points at reservation %s whose %s code differs", h, r.ID, kindOf(v[0])))
			}
		}
	}
	c = doors.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, err := getReservation(tx, string(v))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("door index %x points at %s: %w", k, v, err))
		case r == nil || !r.Active() || !bytes.Equal(doorKey(r.Door), k):
			errs = append(errs, fmt.Errorf("door index %x points at %s, which is not active in that door", k, v))
		}
	}
	c = tx.Bucket(bucketReservations).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var r Reservation
		if err := json.Unmarshal(v, &r); err != nil {
			errs = append(errs, fmt.Errorf("reservation %s does not decode: %w", k, err))
			continue
		}
		if !r.Active() {
			continue
		}
		if id := doors.Get(doorKey(r.Door)); string(id) != r.ID {
			errs = append(errs, fmt.Errorf("active reservation %s: door %d is indexed to %q", r.ID, r.Door, id))
		}
		for kind, code := range r.Codes {
			if v := codes.Get(code.Hash); len(v) < 2 || string(v[1:]) != r.ID || kindOf(v[0]) != kind {
				errs = append(errs, fmt.Errorf("active reservation %s: its %s code is indexed to %q", r.ID, kind, v))
			}
		}
	}
	return errors.Join(errs...)
}

// checkOutboxBytes checks that the outbox's size and count booked in the meta
// bucket are those of the messages it holds.
func checkOutboxBytes(tx *bolt.Tx) error {
	var sum, n int64
	c := tx.Bucket(bucketOutbox).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		sum += int64(len(v))
		n++
	}
	var errs []error
	if booked := outboxBytes(tx); booked != sum {
		errs = append(errs, fmt.Errorf("outbox holds %d bytes but %d are booked", sum, booked))
	}
	if booked := metaInt(tx, keyOutboxCount); booked != n {
		errs = append(errs, fmt.Errorf("outbox holds %d messages but %d are booked", n, booked))
	}
	return errors.Join(errs...)
}

// ReadDoors returns the doors of the closed database at path, read-only;
// os.ErrNotExist when there is none yet. A database a running gateway holds
// is an error after a second (its lock).
func ReadDoors(path string) ([]contract.Door, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("cannot read %q (a running gateway holds it?): %w", path, err)
	}
	defer db.Close()
	var doors []contract.Door
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDoors)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var d contract.Door
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("a door record does not decode: %w", err)
			}
			doors = append(doors, d)
			return nil
		})
	})
	return doors, err
}
