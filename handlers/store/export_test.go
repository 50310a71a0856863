package store

import (
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
