package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	bolt "go.etcd.io/bbolt"
)

// Config configures a Store. The zero value of each field means its default.
type Config struct {
	// Path of the database file. Required.
	Path string
	// CodeKey is the locker's HMAC key for codes. Required, at least 16 bytes.
	// Plain codes from the back-end are hashed with it, and a code typed at
	// the screen is looked up under it first.
	CodeKey []byte
	// PreviousCodeKey is the key before a rotation: a code whose stored hash
	// was made with it still opens its door (looked up after CodeKey), until
	// the back-end has re-sent that reservation's hashes under CodeKey. Nil
	// means no rotation is under way; otherwise at least 16 bytes.
	PreviousCodeKey []byte
	// PreviousCodeKeyUntil ends the overlap by the wall clock: from then on
	// PreviousCodeKey is ignored. The zero time means it is accepted for as
	// long as it is configured.
	PreviousCodeKeyUntil time.Time
	// OpenTimeout bounds the wait for the file lock held by another process
	// (another gateway on the same data dir): past it Open says so. Zero
	// means 1 s.
	OpenTimeout time.Duration
	// OutboxMaxBytes bounds the outbox; past it the oldest messages are
	// dropped, except those held in flight (OutboxHold), which the bound
	// may be exceeded by until they are released. Zero means 64 MiB.
	OutboxMaxBytes int64
	// OutboxMaxAge drops outbox messages that have waited longer than this,
	// measured on Monotonic accumulated across runs, never on the wall clock:
	// a step of the wall clock drops nothing. Time the gateway was not running
	// does not count, and after a power cut a message may wait up to the time
	// since the last commit longer (never shorter). Zero means 30 days.
	OutboxMaxAge time.Duration
	// Monotonic returns the time elapsed on a clock that the wall clock's
	// steps do not move; the outbox age bound runs on it. Nil means the
	// process's monotonic clock.
	Monotonic func() time.Duration
	// Retention keeps delivered, returned and cancelled reservations and the
	// audit trail for this long. Zero means 30 days.
	Retention time.Duration
	// OnDrop is called after a commit that dropped outbox messages, with the
	// reason ("bytes" or "age") and the count. Nil means only logging.
	OnDrop func(reason string, n int)
	// OnCommit is called after each commit that appended outbox messages,
	// with those messages, on the committing goroutine (the gateway publishes
	// them on the local broker). Nil means nothing is called.
	OnCommit func([]Message)
	// Metrics receives locky_store_commit_seconds, the time of each write
	// transaction including its fsync (a histogram of fixed buckets, every
	// one written from the start), locky_store_degraded (1 while a commit
	// fails or failed work waits for its retry), locky_store_pending_writes
	// and locky_store_commit_failures_total by reason. Nil means a private set.
	Metrics *metrics.Set
	// Logger receives the store's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// The defaults of Config's bounds, which the gateway's options show.
const (
	DefaultOutboxMaxBytes = 64 << 20
	DefaultOutboxMaxAge   = 30 * 24 * time.Hour
	DefaultRetention      = 30 * 24 * time.Hour
)

var (
	bucketMeta         = []byte("meta")
	bucketDoors        = []byte("doors")
	bucketPartners     = []byte("partners")
	bucketUsers        = []byte("users")
	bucketReservations = []byte("reservations")
	bucketCodes        = []byte("codes")      // HMAC(code) -> kind byte + reservation id
	bucketDoorIndex    = []byte("door_index") // door -> id of its active reservation
	bucketCycles       = []byte("cycles")     // door -> Cycle in flight
	bucketLastCycles   = []byte("last_cycle") // door -> the last Cycle that closed
	bucketCommands     = []byte("commands")   // msg_id of an applied open_door -> when (RFC 3339)
	bucketAudit        = []byte("audit")      // seq -> AuditRecord
	bucketOutbox       = []byte("outbox")     // seq -> Message

	keyOutboxBytes = []byte("outbox_bytes")
	keyOutboxCount = []byte("outbox_count")
	keyUptime      = []byte("uptime")         // Monotonic time accumulated across runs, in ns
	keyOutboxUp    = []byte("outbox_uptimes") // set once every outbox message carries its uptime
	allBuckets     = [][]byte{bucketMeta, bucketDoors, bucketPartners, bucketUsers, bucketReservations,
		bucketCodes, bucketDoorIndex, bucketCycles, bucketLastCycles, bucketCommands, bucketAudit, bucketOutbox}
)

// commitBuckets are the upper bounds of locky_store_commit_seconds: a bbolt
// commit with its fsync takes milliseconds on a good SD card, up to seconds
// on a worn one.
var commitBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// Store is the locker's database. It is safe for concurrent use.
type Store struct {
	cfg    Config
	db     *bolt.DB
	log    *slog.Logger
	notify chan struct{}
	commit *metrics.PrometheusHistogram
	// previousMatches counts codes found under PreviousCodeKey: while it
	// grows, the back-end has not re-sent every hash under CodeKey.
	previousMatches *metrics.Counter

	// upBase is the uptime read at Open and monoBase Monotonic() then: the
	// uptime is upBase + Monotonic() - monoBase.
	upBase, monoBase time.Duration

	health  health
	writeMu sync.Mutex // serializes write with its check of a failed commit
	hold    outboxHold // outbox messages the bridge has in flight (outbox.go)

	droppedBy map[string]*metrics.Counter // locky_outbox_dropped_total, by reason

	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the database at cfg.Path.
func Open(cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	db, err := openDB(cfg)
	if err != nil {
		return nil, err
	}
	var upBase time.Duration
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		upBase, err = initDB(tx, cfg.Path)
		return err
	})
	if errors.Is(err, ErrNewerFormat) {
		return nil, errors.Join(err, db.Close())
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("cannot initialise %q: %w", cfg.Path, err), db.Close())
	}
	s := &Store{cfg: cfg, db: db, log: cfg.Logger.With("component", "store"), notify: make(chan struct{}, 1),
		commit:          cfg.Metrics.GetOrCreatePrometheusHistogramExt("locky_store_commit_seconds", commitBuckets),
		previousMatches: cfg.Metrics.GetOrCreateCounter("locky_store_previous_code_key_matches_total"),
		upBase:          upBase, monoBase: cfg.Monotonic()}
	s.initHealth() // its metrics exist from the start
	s.registerMetrics(cfg.Metrics)
	return s, nil
}

// validate checks the fields Open requires: the path and the code keys.
func (cfg Config) validate() error {
	if cfg.Path == "" {
		return errors.New("store: Path is empty; set the data directory")
	}
	if len(cfg.CodeKey) < 16 {
		return errors.New("store: the code key is shorter than 16 bytes; configure --code-key or let dev mode generate one")
	}
	if len(cfg.PreviousCodeKey) > 0 && len(cfg.PreviousCodeKey) < 16 {
		return errors.New("store: the previous code key is shorter than 16 bytes; configure the key the back-end hashed with before the rotation")
	}
	return nil
}

// withDefaults returns cfg with each zero field set to its default.
func (cfg Config) withDefaults() Config {
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = time.Second
	}
	if cfg.OutboxMaxBytes == 0 {
		cfg.OutboxMaxBytes = DefaultOutboxMaxBytes
	}
	if cfg.OutboxMaxAge == 0 {
		cfg.OutboxMaxAge = DefaultOutboxMaxAge
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Monotonic == nil {
		start := time.Now()
		cfg.Monotonic = func() time.Duration { return time.Since(start) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	return cfg
}

// openDB opens the bbolt file, saying so when another process holds its lock.
func openDB(cfg Config) (*bolt.DB, error) {
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: cfg.OpenTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("cannot open %q: another gateway (or lockyctl) is using this data dir, and its database stays locked while it runs: stop that first, or use another data dir: %w", cfg.Path, err)
		}
		return nil, fmt.Errorf("cannot open %q: %w", cfg.Path, err)
	}
	return db, nil
}

// initDB checks the format, creates the buckets, fills in what a database
// from an older gateway lacks and migrates it, all in Open's transaction. It
// returns the uptime booked so far.
func initDB(tx *bolt.Tx, path string) (time.Duration, error) {
	format, err := checkFormat(tx, path)
	if err != nil {
		return 0, err
	}
	for _, b := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return 0, fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	if tx.Bucket(bucketMeta).Get(keyOutboxCount) == nil { // a database from before the count
		n := tx.Bucket(bucketOutbox).Stats().KeyN
		if err := tx.Bucket(bucketMeta).Put(keyOutboxCount, u64(uint64(n))); err != nil {
			return 0, err
		}
	}
	upBase := time.Duration(metaInt(tx, keyUptime))
	if err := stampLegacyOutbox(tx, upBase); err != nil {
		return upBase, err
	}
	return upBase, migrate(tx, format)
}

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := s.db.Update(func(tx *bolt.Tx) error { _, err := s.bookUptime(tx); return err }); err != nil {
			s.log.Warn("cannot save the outbox clock at close; queued messages may wait up to the time since the last commit longer",
				"err", err)
		}
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// HashCode returns the keyed hash under which a code is stored and looked up
// (the current code key's).
func (s *Store) HashCode(code string) []byte { return HashCode(s.cfg.CodeKey, code) }

// HashCode returns HMAC-SHA256(key, code), the hash the back-end sends as
// deposit_hash, pickup_hash or courier_hash (hex-encoded) and the store keeps
// in place of the code.
func HashCode(key []byte, code string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(code))
	return m.Sum(nil)
}

// previousKey returns the previous code key while it is accepted at now, or nil.
func (s *Store) previousKey(now time.Time) []byte {
	if len(s.cfg.PreviousCodeKey) == 0 || (!s.cfg.PreviousCodeKeyUntil.IsZero() && !now.Before(s.cfg.PreviousCodeKeyUntil)) {
		return nil
	}
	return s.cfg.PreviousCodeKey
}

// Stats returns bbolt's statistics and the size of the database file.
func (s *Store) Stats() (bolt.Stats, int64) {
	var size int64
	if fi, err := os.Stat(s.cfg.Path); err == nil {
		size = fi.Size()
	}
	return s.db.Stats(), size
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func doorKey(door int) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(door))
	return b
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("corrupt record %x in bucket: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}
