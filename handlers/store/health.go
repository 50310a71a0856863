package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// Reasons of a failed commit, the reason label of
// locky_store_commit_failures_total.
const (
	// FailureNoSpace: the filesystem of the data dir is full (ENOSPC, EDQUOT).
	FailureNoSpace = "no_space"
	// FailureIO: the storage failed (EIO, EROFS: a worn SD card).
	FailureIO = "io"
	// FailureOther: anything else (a damaged record, a closed database).
	FailureOther = "other"
)

var failureReasons = []string{FailureNoSpace, FailureIO, FailureOther}

// lowSpace is the free space under which a failure that carries no errno is
// taken for lack of space: bbolt formats the errors of growing the file
// ("file resize error: %s", "mmap allocate error: %s") with %s, which loses
// the errno, so the filesystem is asked instead.
const lowSpace = 256 << 10

// failureLogEvery throttles the log line of a failing commit, so that a full
// SD card is not filled further by the news that it is full.
const failureLogEvery = time.Minute

// Health is the state of the store's commits.
type Health struct {
	// Degraded is true while the last commit failed or work that failed to
	// commit is held for retry (Pending > 0).
	Degraded bool
	// Reason is the reason of the last failure (FailureNoSpace, …); empty
	// while not degraded.
	Reason string
	// Since is when the store became degraded; zero while not.
	Since time.Time
	// Failures counts the failed commits since then.
	Failures int
	// Err is the last failure, nil while not degraded.
	Err error
	// Pending counts the writes the handlers hold for retry.
	Pending int
}

// health tracks the outcome of the commits; it is guarded by its mutex.
type health struct {
	once       sync.Once
	mu         sync.Mutex
	failing    bool // the last commit failed
	reason     string
	since      time.Time
	failures   int
	err        error
	pending    map[string]int
	recovering bool
	lastLog    time.Time
	skipped    int

	failed map[string]*metrics.Counter
}

// initHealth creates the health state and its metrics, once: Open calls it,
// and so does every use, so that a Store is never without them.
func (s *Store) initHealth() { s.health.once.Do(s.createHealth) }

func (s *Store) createHealth() {
	m := s.cfg.Metrics
	s.health.pending = map[string]int{}
	s.health.failed = map[string]*metrics.Counter{}
	for _, r := range failureReasons {
		s.health.failed[r] = m.GetOrCreateCounter(`locky_store_commit_failures_total{reason="` + r + `"}`)
	}
	m.GetOrCreateGauge("locky_store_degraded", func() float64 {
		if s.Health().Degraded {
			return 1
		}
		return 0
	})
	m.GetOrCreateGauge("locky_store_pending_writes", func() float64 { return float64(s.Health().Pending) })
}

// Health returns the state of the store's commits.
func (s *Store) Health() Health {
	s.initHealth()
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := Health{Pending: h.pendingLocked()}
	out.Degraded = h.failing || out.Pending > 0
	if out.Degraded {
		out.Reason, out.Since, out.Failures, out.Err = h.reason, h.since, h.failures, h.err
	}
	return out
}

func (h *health) pendingLocked() int {
	n := 0
	for _, v := range h.pending {
		n += v
	}
	return n
}

// SetPending tells the store how many writes owner (a handler) holds for
// retry after a failed commit. While any is held the store stays degraded,
// even if smaller commits succeed meanwhile; the store.recovered event goes
// upstream once none is held and the last commit succeeded.
func (s *Store) SetPending(owner string, n int) {
	s.initHealth()
	h := &s.health
	h.mu.Lock()
	h.pending[owner] = n
	h.mu.Unlock()
	s.maybeRecovered()
}

// write runs fn in a write transaction (update) and records its outcome: a
// failed commit makes the store degraded, counts it by reason and logs it
// (throttled); the first success after that clears it and sends
// store.recovered. A rejection (a downstream message refused) is not a
// failure: nothing was to be committed.
//
// bbolt rolls a transaction back when a page write or an fdatasync fails,
// and the database stays usable: the pages written are free pages, and the
// meta page is written last. One case is unknown: when the fdatasync after
// the meta page fails, the meta page is already in the page cache, so this
// process reads the transaction as committed although Commit returned an
// error (and whether it is on the disk is not known). write tells that case
// by a mark each of its transactions leaves in the meta bucket (its id), and
// reports it as committed, so that a caller's retry does not do the work
// twice. Writes through it are serialized with that check, so that no other
// one commits between a failure and its check.
func (s *Store) write(now time.Time, fn func(tx *bolt.Tx, o *Outbox) error) ([]Message, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var txID uint64
	msgs, err := s.update(now, func(tx *bolt.Tx, o *Outbox) error {
		if err := fn(tx, o); err != nil {
			return err
		}
		txID = uint64(tx.ID())
		return tx.Bucket(bucketMeta).Put(keyCommitTx, u64(txID))
	})
	if err != nil && isRejection(err) {
		return msgs, err
	}
	if err != nil && txID != 0 && s.committedAnyway(txID) {
		s.log.Warn("a commit reported an error after its meta page was written: it is taken as committed, but it may not be on the disk; check the storage",
			"err", err)
		select {
		case s.notify <- struct{}{}:
		default:
		}
		err = nil
	}
	s.recordCommit(err)
	return msgs, err
}

// writeRaw is write for a transaction without outbox messages.
func (s *Store) writeRaw(fn func(tx *bolt.Tx) error) error {
	_, err := s.write(time.Now(), func(tx *bolt.Tx, _ *Outbox) error { return fn(tx) })
	return err
}

// keyCommitTx holds the id of the last transaction that write committed.
var keyCommitTx = []byte("commit_txid")

// committedAnyway reports whether the transaction id, whose Commit failed,
// is visible nonetheless.
func (s *Store) committedAnyway(id uint64) bool {
	seen := false
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyCommitTx)
		seen = len(v) == 8 && binary.BigEndian.Uint64(v) == id
		return nil
	})
	return err == nil && seen
}

// IsNoSpace reports whether err is a commit that failed for lack of space.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// failureReason classifies a failed commit.
func (s *Store) failureReason(err error) string {
	switch {
	case IsNoSpace(err):
		return FailureNoSpace
	case errors.Is(err, syscall.EIO), errors.Is(err, syscall.EROFS):
		return FailureIO
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		var st syscall.Statfs_t
		if syscall.Statfs(filepath.Dir(s.cfg.Path), &st) == nil && st.Bavail*uint64(st.Bsize) < lowSpace {
			return FailureNoSpace
		}
	}
	return FailureOther
}

func (s *Store) recordCommit(err error) {
	s.initHealth()
	h := &s.health
	if err == nil {
		h.mu.Lock()
		h.failing = false
		h.mu.Unlock()
		s.maybeRecovered()
		return
	}
	reason := s.failureReason(err)
	h.mu.Lock()
	if h.since.IsZero() {
		h.since, h.failures = time.Now(), 0
	}
	h.failing, h.reason, h.err = true, reason, err
	h.failures++
	failures, since := h.failures, h.since
	logNow := h.lastLog.IsZero() || time.Since(h.lastLog) >= failureLogEvery
	skipped := h.skipped
	if logNow {
		h.lastLog, h.skipped = time.Now(), 0
	} else {
		h.skipped++
	}
	h.mu.Unlock()
	h.failed[reason].Inc()
	if !logNow {
		return
	}
	args := []any{"reason", reason, "err", err, "failed_commits", failures, "since", since.UTC().Format(time.RFC3339)}
	if skipped > 0 {
		args = append(args, "repeats_not_logged", skipped)
	}
	s.log.Log(context.Background(), slog.LevelError, failureAdvice(reason, filepath.Dir(s.cfg.Path)), args...)
}

func failureAdvice(reason, dir string) string {
	switch reason {
	case FailureNoSpace:
		return fmt.Sprintf("cannot commit to the database: the filesystem of %s is full; free space there (a runaway log, old files) or replace the card; the locker retries what failed and reports store.recovered", dir)
	case FailureIO:
		return fmt.Sprintf("cannot commit to the database: the storage of %s fails (a worn SD card?); replace it; the locker retries what failed", dir)
	}
	return "cannot commit to the database; the locker retries what failed; if this lasts, check the database with lockyctl and restore it from a backup"
}

// maybeRecovered sends store.recovered when the store was degraded, its
// last commit succeeded and no handler holds work for retry any more.
func (s *Store) maybeRecovered() {
	h := &s.health
	h.mu.Lock()
	if h.failing || h.since.IsZero() || h.recovering || h.pendingLocked() > 0 {
		h.mu.Unlock()
		return
	}
	h.recovering = true
	reason, since, failures := h.reason, h.since, h.failures
	h.mu.Unlock()

	took := time.Since(since).Round(time.Second)
	_, err := s.update(time.Now(), func(_ *bolt.Tx, o *Outbox) error {
		_, err := o.Event(contract.Event{Type: contract.EventStoreRecovered,
			Reason: fmt.Sprintf("%s: %d commits failed over %s", reason, failures, took)})
		return err
	})
	h.mu.Lock()
	h.recovering = false
	if err == nil {
		h.since, h.failures, h.reason, h.err, h.lastLog, h.skipped = time.Time{}, 0, "", nil, time.Time{}, 0
	}
	h.mu.Unlock()
	if err != nil {
		s.recordCommit(fmt.Errorf("cannot commit the store.recovered event: %w", err))
		return
	}
	s.log.Info("the database commits again; store.recovered sent upstream", "reason", reason, "failed_commits", failures, "degraded_for", took)
}
