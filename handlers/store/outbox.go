package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// Message is an upstream message in the outbox: it counts as sent only once
// the cloud broker has acknowledged it and the bridge has removed it.
type Message struct {
	Seq     uint64          `json:"-"`
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
	At      time.Time       `json:"at"`
	// Up is the store's uptime (Config.Monotonic accumulated across runs)
	// when the message was enqueued: its age is the uptime since, not the
	// wall clock's At.
	Up time.Duration `json:"up"`
	// Refusal is, for the ack of a downstream message the store refused
	// (invalid, conflicting), why: what the ack's error says. It is known
	// only to the caller of the write that added the message (not stored).
	Refusal string `json:"-"`
}

// Outbox is the write side of the outbox inside one transaction. Every message
// appended becomes visible with the transaction's commit, or not at all.
type Outbox struct {
	tx    *bolt.Tx
	now   time.Time
	up    time.Duration
	added []Message
}

// EventID formats an outbox sequence as an event id that increases as a
// number and as a string.
func EventID(seq uint64) string { return fmt.Sprintf("%016d", seq) }

// Append adds a message whose payload is built from its sequence number.
func (o *Outbox) Append(topic string, build func(seq uint64) any) (Message, error) {
	b := o.tx.Bucket(bucketOutbox)
	seq, err := b.NextSequence()
	if err != nil {
		return Message{}, fmt.Errorf("outbox sequence: %w", err)
	}
	payload, err := json.Marshal(build(seq))
	if err != nil {
		return Message{}, fmt.Errorf("encode outbox message: %w", err)
	}
	m := Message{Seq: seq, Topic: topic, Payload: payload, At: o.now, Up: o.up}
	raw, err := json.Marshal(m)
	if err != nil {
		return Message{}, err
	}
	if err := b.Put(u64(seq), raw); err != nil {
		return Message{}, fmt.Errorf("outbox put: %w", err)
	}
	if err := addOutbox(o.tx, 1, int64(len(raw))); err != nil {
		return Message{}, err
	}
	o.added = append(o.added, m)
	return m, nil
}

// Event appends an upstream event, filling its id and time.
func (o *Outbox) Event(ev contract.Event) (contract.Event, error) {
	if ev.At.IsZero() {
		ev.At = o.now.UTC()
	}
	_, err := o.Append(contract.TopicEvents, func(seq uint64) any {
		ev.EventID = EventID(seq)
		return ev
	})
	return ev, err
}

// Ack appends the acknowledgement of a downstream message.
func (o *Outbox) Ack(msgID string, err error) error {
	a := contract.Ack{MsgID: msgID, OK: err == nil}
	if err != nil {
		a.Error = err.Error()
	}
	if _, aerr := o.Append(contract.TopicAcks, func(uint64) any { return a }); aerr != nil {
		return aerr
	}
	o.added[len(o.added)-1].Refusal = a.Error
	return nil
}

// addOutbox books messages added to (or, negative, removed from) the outbox in
// the meta bucket, so that its depth and size are known without a walk.
func addOutbox(tx *bolt.Tx, messages, bytes int64) error {
	meta := tx.Bucket(bucketMeta)
	for _, kv := range []struct {
		key   []byte
		delta int64
	}{{keyOutboxCount, messages}, {keyOutboxBytes, bytes}} {
		cur := metaInt(tx, kv.key) + kv.delta
		if cur < 0 {
			cur = 0
		}
		if err := meta.Put(kv.key, u64(uint64(cur))); err != nil {
			return err
		}
	}
	return nil
}

func metaInt(tx *bolt.Tx, key []byte) int64 {
	if v := tx.Bucket(bucketMeta).Get(key); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

func outboxBytes(tx *bolt.Tx) int64 { return metaInt(tx, keyOutboxBytes) }

// update runs fn in a write transaction with an Outbox, enforces the outbox
// bound, and after the commit wakes the outbox reader. It returns the messages
// that the transaction appended.
func (s *Store) update(now time.Time, fn func(tx *bolt.Tx, o *Outbox) error) ([]Message, error) {
	var o *Outbox
	dropped := 0
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		up, err := s.bookUptime(tx)
		if err != nil {
			return err
		}
		o = &Outbox{tx: tx, now: now, up: up}
		if err := fn(tx, o); err != nil {
			return err
		}
		if len(o.added) == 0 {
			return nil
		}
		dropped, err = s.trimOutbox(tx)
		return err
	})
	s.commit.UpdateDuration(start)
	if err != nil {
		return nil, err
	}
	if dropped > 0 {
		s.dropped("bytes", dropped)
	}
	if len(o.added) > 0 {
		if s.cfg.OnCommit != nil {
			s.cfg.OnCommit(o.added)
		}
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	return o.added, nil
}

// trimOutbox drops the oldest messages while the outbox is over its byte
// bound, except those held, which do not count against it while held (see
// outboxHold).
func (s *Store) trimOutbox(tx *bolt.Tx) (int, error) {
	total := outboxBytes(tx)
	if total <= s.cfg.OutboxMaxBytes {
		return 0, nil
	}
	s.hold.mu.Lock()
	defer s.hold.mu.Unlock()
	b := tx.Bucket(bucketOutbox)
	total -= s.hold.bytesLocked(b)
	var doomed [][]byte
	var freed int64
	c := b.Cursor()
	for k, v := c.First(); k != nil && total-freed > s.cfg.OutboxMaxBytes; k, v = c.Next() {
		if s.hold.heldLocked(k) {
			continue
		}
		freed += int64(len(v))
		doomed = append(doomed, append([]byte(nil), k...))
	}
	s.hold.droppingLocked(tx, doomed)
	return deleteKeys(tx, b, doomed, freed)
}

func (s *Store) dropped(reason string, n int) {
	s.log.Warn("outbox over its bound: dropped the oldest upstream messages; raise the outbox limit or restore the cloud link",
		"reason", reason, "dropped", n)
	if c := s.droppedBy[reason]; c != nil {
		c.Add(n)
	}
	if s.cfg.OnDrop != nil {
		s.cfg.OnDrop(reason, n)
	}
}

// OutboxNotify returns a channel that receives after each commit that added
// messages to the outbox. It has room for one wake-up: readers must drain the
// outbox after each one.
func (s *Store) OutboxNotify() <-chan struct{} { return s.notify }

// OutboxAfter returns up to max messages whose sequence is above after, oldest first.
func (s *Store) OutboxAfter(after uint64, max int) ([]Message, error) {
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("corrupt outbox message %d: %w", binary.BigEndian.Uint64(k), err)
			}
			m.Seq = binary.BigEndian.Uint64(k)
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// outboxHold is the set of outbox messages that the bridge holds: read to be
// sent, and whether the cloud broker has them not known yet (their PUBACK is
// pending, or on its way to OutboxDelivered). The bounds skip held messages:
// one dropped while in flight would be counted dropped although it was
// delivered. Nor do held messages count against the byte bound: the bound
// drops the unsent ones in their stead, the oldest first, never a newer
// message because older ones are in flight. So while messages are held the
// outbox may be over its bound by their size, at most the bridge's window
// (plus what its remover has not yet removed).
//
// The bound still holds in the end: a held message leaves the set when
// OutboxDelivered removes it, or when the bridge releases it (refused, or
// its link dropped: it is sent again on the next connection), and the next
// prune applies to what is left. It is a set rather than a high-water
// sequence because a message the cloud broker refuses stays in the outbox,
// to be sent again after the next reconnect, and must fall under the bounds
// meanwhile (a broker refusing everything must not let the outbox grow
// without end): the bridge releases it alone. The set is in memory only:
// after a restart nothing is in flight.
type outboxHold struct {
	// mu is held by a bound's walk that chooses what to drop, and by
	// OutboxHold while it reads and holds: so a bound either sees a message
	// held, or chose it before OutboxHold read, and then OutboxHold finds it
	// in dropping (until the drop's commit, after which a read no longer
	// sees it). Without dropping, a read that starts before the drop's
	// commit would still see, and hand out, a message being dropped.
	mu sync.Mutex
	// seqs counts the holds of each held message: the same message may be
	// held twice, by the bridge's remover that has not yet removed it after
	// one connection's PUBACK and by the next connection, which sends it
	// again. Each OutboxHold of it is undone by one release.
	seqs map[uint64]int
	// dropping is what the last walk (number walk) chose to drop. It is
	// emptied by its transaction's commit or, when that rolled back, by the
	// next walk. Until then OutboxHold skips the messages of a rolled-back
	// drop (they are sent after the next reconnect).
	dropping map[uint64]struct{}
	walk     uint64
}

// bytesLocked returns the size of the held messages in the outbox bucket b;
// mu must be held.
func (h *outboxHold) bytesLocked(b *bolt.Bucket) int64 {
	var n int64
	for seq := range h.seqs {
		n += int64(len(b.Get(u64(seq))))
	}
	return n
}

// heldLocked reports whether the message of outbox key k is held; mu must be held.
func (h *outboxHold) heldLocked(k []byte) bool {
	_, ok := h.seqs[binary.BigEndian.Uint64(k)]
	return ok
}

// droppingLocked records the outbox keys that tx drops, in place of what the
// walk before recorded (its transaction has ended: write transactions run
// one at a time, each with one walk); mu must be held.
func (h *outboxHold) droppingLocked(tx *bolt.Tx, keys [][]byte) {
	h.walk++
	h.dropping = nil
	if len(keys) == 0 {
		return
	}
	h.dropping = make(map[uint64]struct{}, len(keys))
	for _, k := range keys {
		h.dropping[binary.BigEndian.Uint64(k)] = struct{}{}
	}
	walk := h.walk
	tx.OnCommit(func() {
		h.mu.Lock()
		if h.walk == walk {
			h.dropping = nil
		}
		h.mu.Unlock()
	})
}

func (h *outboxHold) release(seqs []uint64) {
	h.mu.Lock()
	for _, seq := range seqs {
		if h.seqs[seq] > 1 {
			h.seqs[seq]--
		} else {
			delete(h.seqs, seq)
		}
	}
	h.mu.Unlock()
}

// OutboxHold returns up to max messages whose sequence is above after,
// oldest first, like OutboxAfter but without those a bound is dropping in a
// commit under way, and holds them: no bound drops them, nor counts them,
// until OutboxDelivered removes them or OutboxRelease releases them. The
// bridge reads with it what it is about to send, and releases what it does
// not see acknowledged.
func (s *Store) OutboxHold(after uint64, max int) ([]Message, error) {
	s.hold.mu.Lock()
	defer s.hold.mu.Unlock()
	if s.hold.seqs == nil {
		s.hold.seqs = make(map[uint64]int)
	}
	var out []Message
	for len(out) < max { // more than once only past messages being dropped
		want := max - len(out)
		msgs, err := s.OutboxAfter(after, want)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			after = m.Seq
			if _, ok := s.hold.dropping[m.Seq]; ok {
				continue
			}
			s.hold.seqs[m.Seq]++
			out = append(out, m)
		}
		if len(msgs) < want {
			break
		}
	}
	return out, nil
}

// OutboxRelease releases held messages, one hold of each: they stay in the
// outbox, under its bounds again from the next prune on (unless held again).
// Sequences not held are ignored.
func (s *Store) OutboxRelease(seqs ...uint64) { s.hold.release(seqs) }

// OutboxRemove deletes the messages with the given sequences (those that the
// cloud broker has acknowledged). Missing ones are ignored.
func (s *Store) OutboxRemove(seqs ...uint64) error {
	_, err := s.OutboxDelivered(seqs...)
	return err
}

// OutboxDelivered deletes the messages with the given sequences, those that
// the cloud broker has acknowledged, and returns how many it deleted: the
// messages delivered. One that is missing was dropped by a bound (and counted
// so) or delivered before, and is not counted again: drop and delivery both
// delete by key in a write transaction, so each message is counted by the
// one that deleted it. It releases the held ones among seqs (one hold each)
// after its commit, whether it succeeded or not: one it failed to delete
// stays in the outbox under its bounds.
func (s *Store) OutboxDelivered(seqs ...uint64) (int, error) {
	var n int64
	defer s.hold.release(seqs)
	err := s.db.Update(func(tx *bolt.Tx) error {
		n = 0
		if _, err := s.bookUptime(tx); err != nil {
			return err
		}
		b := tx.Bucket(bucketOutbox)
		var freed int64
		for _, seq := range seqs {
			if v := b.Get(u64(seq)); v != nil {
				freed += int64(len(v))
				n++
				if err := b.Delete(u64(seq)); err != nil {
					return fmt.Errorf("outbox delete %d: %w", seq, err)
				}
			}
		}
		return addOutbox(tx, -n, -freed)
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// OutboxStats describes the outbox backlog.
type OutboxStats struct {
	Depth  int
	Bytes  int64
	Oldest time.Time // zero when empty
	// Waited is how long the oldest message has waited, on the clock of the
	// age bound (Oldest is the wall clock's, which may step); 0 when empty.
	Waited time.Duration
}

// OutboxStats returns the outbox depth, size, and the time of its oldest
// message and how long it has waited.
func (s *Store) OutboxStats() (OutboxStats, error) {
	var st OutboxStats
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		st.Depth = int(metaInt(tx, keyOutboxCount))
		st.Bytes = outboxBytes(tx)
		if _, v := b.Cursor().First(); v != nil {
			var m Message
			if err := json.Unmarshal(v, &m); err == nil {
				st.Oldest = m.At
				up := max(s.uptime(), time.Duration(metaInt(tx, keyUptime)))
				st.Waited = max(up-m.Up, 0)
			}
		}
		return nil
	})
	return st, err
}

// uptime returns the time Monotonic has run while the store was open, over
// all runs, as far as it was saved.
func (s *Store) uptime() time.Duration { return s.upBase + s.cfg.Monotonic() - s.monoBase }

// bookUptime saves the uptime in the meta bucket and returns it. It never
// saves less than is saved: every message stamped in a committed transaction
// is at or below the saved uptime, so after a power cut (the uptime restarts
// from the last commit) a message's age is never more than it truly waited.
func (s *Store) bookUptime(tx *bolt.Tx) (time.Duration, error) {
	up := max(s.uptime(), time.Duration(metaInt(tx, keyUptime)))
	if err := tx.Bucket(bucketMeta).Put(keyUptime, u64(uint64(up))); err != nil {
		return 0, fmt.Errorf("save the uptime: %w", err)
	}
	return up, nil
}

// stampLegacyOutbox gives the messages of a database from before the uptime
// stamps the uptime up: their age starts at 0 in the first run that sees
// them, since their wall-clock time cannot be trusted. It runs once per
// database.
func stampLegacyOutbox(tx *bolt.Tx, up time.Duration) error {
	meta := tx.Bucket(bucketMeta)
	if meta.Get(keyOutboxUp) != nil {
		return nil
	}
	b := tx.Bucket(bucketOutbox)
	type stamped struct {
		key, val []byte
	}
	var redo []stamped
	var grown int64
	err := b.ForEach(func(k, v []byte) error {
		var probe struct {
			Up *time.Duration `json:"up"`
		}
		if err := json.Unmarshal(v, &probe); err != nil {
			return fmt.Errorf("corrupt outbox message %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if probe.Up != nil {
			return nil
		}
		var m Message
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("corrupt outbox message %d: %w", binary.BigEndian.Uint64(k), err)
		}
		m.Up = up
		raw, err := json.Marshal(m)
		if err != nil {
			return err
		}
		grown += int64(len(raw) - len(v))
		redo = append(redo, stamped{append([]byte(nil), k...), raw})
		return nil
	})
	if err != nil {
		return fmt.Errorf("stamp the outbox with the uptime: %w", err)
	}
	for _, r := range redo {
		if err := b.Put(r.key, r.val); err != nil {
			return fmt.Errorf("stamp the outbox with the uptime: %w", err)
		}
	}
	if err := addOutbox(tx, 0, grown); err != nil {
		return err
	}
	return meta.Put(keyOutboxUp, []byte{1})
}

// pruneOutbox drops the outbox messages that have waited longer than the age
// bound at uptime up, except those held (see outboxHold).
func (s *Store) pruneOutbox(tx *bolt.Tx, up time.Duration) (int, error) {
	s.hold.mu.Lock()
	defer s.hold.mu.Unlock()
	b := tx.Bucket(bucketOutbox)
	var doomed [][]byte
	var freed int64
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var m Message
		if err := json.Unmarshal(v, &m); err != nil {
			return 0, fmt.Errorf("corrupt outbox message %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if up-m.Up <= s.cfg.OutboxMaxAge {
			break
		}
		if s.hold.heldLocked(k) {
			continue
		}
		freed += int64(len(v))
		doomed = append(doomed, append([]byte(nil), k...))
	}
	s.hold.droppingLocked(tx, doomed)
	return deleteKeys(tx, b, doomed, freed)
}

// deleteKeys deletes keys collected by a cursor walk (deleting under a moving
// cursor skips entries) and books the freed outbox bytes.
func deleteKeys(tx *bolt.Tx, b *bolt.Bucket, keys [][]byte, freed int64) (int, error) {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), addOutbox(tx, -int64(len(keys)), -freed)
}
