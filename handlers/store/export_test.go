package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// SkipFsync makes commits skip fsync, so that tests and benchmarks that commit
// thousands of times measure the store and not the disk. Data still reaches the
// file on each commit; only its durability across a power cut is lost.
func SkipFsync(s *Store) { s.db.NoSync = true }

// PathOf returns the file of s.
func PathOf(s *Store) string { return s.cfg.Path }

// CheckFile checks a closed database: bbolt's own consistency check, then the
// store's invariants: every code index entry points at a reservation that has
// that code, every active reservation holds its door index entry and its
// codes' entries, every door index entry points at an active reservation of
// that door, and the booked outbox size is the outbox's size.
func CheckFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		errs = append(errs, checkIndexes(tx), checkOutboxBytes(tx))
		return errors.Join(errs...)
	})
}

func checkIndexes(tx *bolt.Tx) error {
	var errs []error
	err := tx.Bucket(bucketCodes).ForEach(func(h, v []byte) error {
		if len(v) < 2 {
			errs = append(errs, fmt.Errorf("code index %x: value %q is too short", h, v))
			return nil
		}
		r, err := getReservation(tx, string(v[1:]))
		if err != nil {
			return err
		}
		if r == nil {
			errs = append(errs, fmt.Errorf("code index %x points at missing reservation %s", h, v[1:]))
		} else if c := r.Codes[kindOf(v[0])]; c == nil || !bytes.Equal(c.Hash, h) {
			errs = append(errs, fmt.Errorf("code index %x points at reservation %s whose %s code differs", h, r.ID, kindOf(v[0])))
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bucketDoorIndex).ForEach(func(k, v []byte) error {
		r, err := getReservation(tx, string(v))
		if err != nil {
			return err
		}
		if r == nil || !r.Active() || !bytes.Equal(doorKey(r.Door), k) {
			errs = append(errs, fmt.Errorf("door index %x points at %s, which is not active in that door", k, v))
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bucketReservations).ForEach(func(_, v []byte) error {
		var r Reservation
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if !r.Active() {
			return nil
		}
		if id := tx.Bucket(bucketDoorIndex).Get(doorKey(r.Door)); string(id) != r.ID {
			errs = append(errs, fmt.Errorf("active reservation %s: door %d is indexed to %q", r.ID, r.Door, id))
		}
		for k, c := range r.Codes {
			if v := tx.Bucket(bucketCodes).Get(c.Hash); len(v) < 2 || string(v[1:]) != r.ID || kindOf(v[0]) != k {
				errs = append(errs, fmt.Errorf("active reservation %s: its %s code is indexed to %q", r.ID, k, v))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

func checkOutboxBytes(tx *bolt.Tx) error {
	var sum, n int64
	err := tx.Bucket(bucketOutbox).ForEach(func(_, v []byte) error {
		sum += int64(len(v))
		n++
		return nil
	})
	if err != nil {
		return err
	}
	if booked := outboxBytes(tx); booked != sum {
		return fmt.Errorf("outbox holds %d bytes but %d are booked", sum, booked)
	}
	if booked := metaInt(tx, keyOutboxCount); booked != n {
		return fmt.Errorf("outbox holds %d messages but %d are booked", n, booked)
	}
	return nil
}

// LoadReservations applies reservation upserts in batches of a thousand per
// transaction, through the same checks as UpsertReservation, without acks: a
// fast way to fill a store for benchmarks.
func LoadReservations(s *Store, now time.Time, rs []contract.Reservation, grace time.Duration) error {
	for len(rs) > 0 {
		batch := rs[:min(len(rs), 1000)]
		rs = rs[len(batch):]
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, r := range batch {
				if err := s.upsertReservation(tx, now, r, grace); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
