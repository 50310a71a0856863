package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// KindSupport marks a door cycle opened remotely by support, not by a code.
const KindSupport = "support"

// Cycle is a door that opened for a code (or for support) and has not closed
// yet. It is persisted when the door reports open, so that a restart, a power
// cut or an upgrade in the middle of a delivery still completes it.
type Cycle struct {
	Door        int       `json:"door"`
	Reservation string    `json:"reservation,omitempty"`
	Kind        string    `json:"kind"`
	RequestID   string    `json:"request_id,omitempty"`
	OpenedAt    time.Time `json:"opened_at"`
}

// DoorOpened persists the cycle of a door that reported open and audits the
// opening; ev, when not nil, is appended upstream in the same transaction.
func (s *Store) DoorOpened(now time.Time, c Cycle, ev *contract.Event) ([]Message, error) {
	return s.write(now, func(tx *bolt.Tx, o *Outbox) error {
		if err := putJSON(tx.Bucket(bucketCycles), doorKey(c.Door), c); err != nil {
			return err
		}
		if err := s.putAudit(tx, AuditRecord{At: now.UTC(), Door: c.Door, Reservation: c.Reservation,
			Kind: c.Kind, Result: contract.ResultOpened, RequestID: c.RequestID}); err != nil {
			return err
		}
		if ev != nil {
			_, err := o.Event(*ev)
			return err
		}
		return nil
	})
}

// Transition is what closing a door does to its reservation: the new status
// (unchanged to leave it) and the event to send upstream.
type Transition struct {
	Status    string
	EventType string
	// Unused keeps the code that opened the door unused (a deposit whose
	// door closed empty: the courier has not delivered yet).
	Unused bool
	// Also is a second event of the closing, in the same transaction
	// (door.occupied_after_pickup beside reservation.delivered); empty for
	// none.
	Also string
}

// CloseCycle completes the cycle of a door that reported closed, in one
// transaction: decide gives the reservation's new status and event; the code
// that opened the door starts its grace period; the event enters the outbox;
// the cycle is removed. It returns nil messages when the door had no cycle.
func (s *Store) CloseCycle(now time.Time, door int, decide func(Cycle, *Reservation) Transition) (*Cycle, []Message, error) {
	var done *Cycle
	msgs, err := s.write(now, func(tx *bolt.Tx, o *Outbox) error {
		cycles := tx.Bucket(bucketCycles)
		var c Cycle
		ok, err := getJSON(cycles, doorKey(door), &c)
		if err != nil || !ok {
			return err
		}
		done = &c
		if err := cycles.Delete(doorKey(door)); err != nil {
			return err
		}
		// The door's last cycle decides whether a used code may reopen it
		// within its grace period (controller.Judge): only its own cycle's.
		if err := putJSON(tx.Bucket(bucketLastCycles), doorKey(door), c); err != nil {
			return err
		}
		ev := contract.Event{Type: contract.EventDoorClosed, Door: door, CodeKind: c.Kind}
		if c.Reservation != "" {
			r, err := getReservation(tx, c.Reservation)
			if err != nil {
				return err
			}
			if r != nil {
				t := decide(c, r)
				next := *r
				next.Codes = map[string]*Code{}
				for k, v := range r.Codes {
					cp := *v
					next.Codes[k] = &cp
				}
				if code := next.Codes[c.Kind]; code != nil && code.UsedAt.IsZero() && !t.Unused {
					code.UsedAt = now.UTC()
				}
				if t.Status != "" {
					next.Status = t.Status
				}
				next.UpdatedAt = now.UTC()
				if err := putReservation(tx, r, &next); err != nil {
					return err
				}
				ev = contract.Event{Type: t.EventType, Reservation: r.ID, Door: door, Status: next.Status, CodeKind: c.Kind}
				if t.Also != "" {
					also := ev
					also.Type = t.Also
					if _, err := o.Event(ev); err != nil {
						return err
					}
					ev = also
				}
			}
		}
		_, err = o.Event(ev)
		return err
	})
	return done, msgs, err
}

// LastCycle returns the last door cycle that closed on door, or nil when the
// door has not closed a cycle since this record was introduced.
func (s *Store) LastCycle(door int) (*Cycle, error) {
	var c *Cycle
	err := s.db.View(func(tx *bolt.Tx) error {
		var last Cycle
		ok, err := getJSON(tx.Bucket(bucketLastCycles), doorKey(door), &last)
		if err != nil {
			return fmt.Errorf("corrupt last door cycle of door %d: %w", door, err)
		}
		if ok {
			c = &last
		}
		return nil
	})
	return c, err
}

// Cycles returns the door cycles in flight (after a restart: those that were
// open when the gateway stopped).
func (s *Store) Cycles() ([]Cycle, error) {
	var out []Cycle
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCycles).ForEach(func(_, v []byte) error {
			var c Cycle
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("corrupt door cycle: %w", err)
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// AppendEvent commits one upstream event, with an audit record when a is not nil.
func (s *Store) AppendEvent(now time.Time, ev contract.Event, a *AuditRecord) (contract.Event, []Message, error) {
	var out contract.Event
	msgs, err := s.write(now, func(tx *bolt.Tx, o *Outbox) error {
		if a != nil {
			if err := s.putAudit(tx, *a); err != nil {
				return err
			}
		}
		var err error
		out, err = o.Event(ev)
		return err
	})
	return out, msgs, err
}

// RemoteOpen commits a support command to open a door: its audit record, its
// event and its ack. It reports false, having acked the refusal, when the
// locker has no such door.
func (s *Store) RemoteOpen(now time.Time, msgID string, door int, reason string) (bool, error) {
	accepted := false
	_, err := s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error {
		if tx.Bucket(bucketDoors).Get(doorKey(door)) == nil {
			return reject("door %d does not exist: %w", door, ErrUnknownDoor)
		}
		// Delivery is at least once: a command seen before is acked again
		// and opens nothing, or a redelivery would reopen a door with
		// nobody from support there.
		cmds := tx.Bucket(bucketCommands)
		if cmds.Get([]byte(msgID)) != nil {
			return nil
		}
		if err := cmds.Put([]byte(msgID), []byte(now.UTC().Format(time.RFC3339))); err != nil {
			return err
		}
		if err := s.putAudit(tx, AuditRecord{At: now.UTC(), Door: door, Kind: KindSupport, Result: "commanded",
			Reason: reason, RequestID: msgID}); err != nil {
			return err
		}
		if _, err := o.Event(contract.Event{Type: contract.EventRemoteOpen, Door: door, Reason: reason}); err != nil {
			return err
		}
		accepted = true
		return nil
	})
	return accepted && err == nil, err
}

// pruneCommands forgets the msg_ids of support commands older than limit:
// the cloud broker does not redeliver a message that old.
func pruneCommands(tx *bolt.Tx, limit time.Time) error {
	b := tx.Bucket(bucketCommands)
	var old [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if at, err := time.Parse(time.RFC3339, string(v)); err != nil || at.Before(limit) {
			old = append(old, k)
		}
		return nil
	})
	for _, k := range old {
		if err == nil {
			err = b.Delete(k)
		}
	}
	return err
}

var keyLockout = []byte("lockout")

// Lockout is the screen's lockout state, kept so that a restart (a power
// cut) does not give a guesser a fresh set of attempts.
type Lockout struct {
	Until time.Time `json:"until"`
	// For is how long the lockout ending at Until lasts: a wall clock that
	// stepped back across a restart cannot make the rest of it longer.
	For   time.Duration `json:"for,omitempty"`
	Level int           `json:"level"`
	// Failures are the invalid codes still inside the lockout window, so
	// that a restart does not give a guesser a fresh set of attempts.
	Failures []time.Time `json:"failures,omitempty"`
}

// SaveLockout records the screen's lockout state.
func (s *Store) SaveLockout(l Lockout) error {
	return s.writeRaw(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketMeta), keyLockout, l) })
}

// Lockout returns the last recorded lockout state (zero when none).
func (s *Store) Lockout() (Lockout, error) {
	var l Lockout
	err := s.db.View(func(tx *bolt.Tx) error {
		_, err := getJSON(tx.Bucket(bucketMeta), keyLockout, &l)
		return err
	})
	return l, err
}
