package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// FormatVersion is the layout of the database that this binary reads and
// writes. A database of an older format is migrated forward at Open, in one
// transaction; one of a newer format (written by a newer release, met after
// a rollback) is refused before anything is written to it, so that a
// rollback never corrupts state. Raise it, and add the step to migrations,
// with every change an older binary would misread.
//
//	0: a database from before the format was recorded (it has the layout of 1)
//	1: the buckets of allBuckets; outbox count and bytes booked in meta;
//	   each outbox message with its uptime
const FormatVersion = 1

var keyFormat = []byte("format")

// migrations[v] brings a database of format v to v+1, inside the open's
// write transaction.
var migrations = []func(tx *bolt.Tx) error{
	0: func(tx *bolt.Tx) error { return nil }, // the layout is 1's; Open's own steps book what it lacks
}

// checkFormat refuses a database newer than this binary, before Open writes
// anything; it returns the format found (0 for a new or unversioned one).
func checkFormat(tx *bolt.Tx, path string) (int64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	if raw := meta.Get(keyFormat); raw != nil && len(raw) != 8 {
		return 0, fmt.Errorf("%q records its format in %d bytes, not 8: the database is damaged; restore it from a backup", path, len(raw))
	}
	v := metaInt(tx, keyFormat)
	if v < 0 || v > FormatVersion { // < 0: above 2^63, newer than anything
		return v, fmt.Errorf("%w: %q is format %d, and this locky-gateway reads format %d at most: it was written by a newer release; run that release again, or restore the backup made before the upgrade",
			ErrNewerFormat, path, v, FormatVersion)
	}
	return v, nil
}

// migrate runs the migrations from format v to FormatVersion and records it.
func migrate(tx *bolt.Tx, v int64) error {
	for ; v < FormatVersion; v++ {
		if err := migrations[v](tx); err != nil {
			return fmt.Errorf("cannot migrate the database from format %d to %d: %w", v, v+1, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keyFormat, u64(FormatVersion))
}
