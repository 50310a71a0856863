package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
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
	_, aerr := o.Append(contract.TopicAcks, func(uint64) any { return a })
	return aerr
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

// trimOutbox drops the oldest messages while the outbox is over its byte bound.
func (s *Store) trimOutbox(tx *bolt.Tx) (int, error) {
	total := outboxBytes(tx)
	if total <= s.cfg.OutboxMaxBytes {
		return 0, nil
	}
	b := tx.Bucket(bucketOutbox)
	var doomed [][]byte
	var freed int64
	c := b.Cursor()
	for k, v := c.First(); k != nil && total-freed > s.cfg.OutboxMaxBytes; k, v = c.Next() {
		freed += int64(len(v))
		doomed = append(doomed, append([]byte(nil), k...))
	}
	return deleteKeys(tx, b, doomed, freed)
}

func (s *Store) dropped(reason string, n int) {
	s.log.Warn("outbox over its bound: dropped the oldest upstream messages; raise the outbox limit or restore the cloud link",
		"reason", reason, "dropped", n)
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
// one that deleted it.
func (s *Store) OutboxDelivered(seqs ...uint64) (int, error) {
	var n int64
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
// bound at uptime up.
func (s *Store) pruneOutbox(tx *bolt.Tx, up time.Duration) (int, error) {
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
		freed += int64(len(v))
		doomed = append(doomed, append([]byte(nil), k...))
	}
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
