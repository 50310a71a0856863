package store

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// UpsertDoor creates or replaces a door and acks.
func (s *Store) UpsertDoor(now time.Time, msgID string, d contract.Door) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error {
		if d.Partner != "" && tx.Bucket(bucketPartners).Get([]byte(d.Partner)) == nil {
			return reject("door %d: partner %s does not exist: %w", d.ID, d.Partner, ErrUnknownPartner)
		}
		if id := tx.Bucket(bucketDoorIndex).Get(doorKey(d.ID)); id != nil && d.Partner != "" {
			r, err := getReservation(tx, string(id))
			if err != nil {
				return err
			}
			if r != nil && r.Partner != d.Partner {
				return reject("door %d holds reservation %s of partner %q; it cannot be allocated to partner %q now: %w",
					d.ID, r.ID, r.Partner, d.Partner, ErrPartnerMismatch)
			}
		}
		return putJSON(tx.Bucket(bucketDoors), doorKey(d.ID), d)
	})
}

// DeleteDoor deletes a door that holds no reservation and is not open, and acks.
func (s *Store) DeleteDoor(now time.Time, msgID string, door int) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error {
		if id := tx.Bucket(bucketDoorIndex).Get(doorKey(door)); id != nil {
			return reject("door %d holds reservation %s; delete or finish it first: %w", door, id, ErrParcelInside)
		}
		if tx.Bucket(bucketCycles).Get(doorKey(door)) != nil {
			return reject("door %d is open; try again once it is closed: %w", door, ErrParcelInside)
		}
		return tx.Bucket(bucketDoors).Delete(doorKey(door))
	})
}

// Door returns a door, or false when the locker has no such door.
func (s *Store) Door(id int) (contract.Door, bool, error) {
	var d contract.Door
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		ok, err = getJSON(tx.Bucket(bucketDoors), doorKey(id), &d)
		return err
	})
	return d, ok, err
}

// Doors returns every door in door order.
func (s *Store) Doors() ([]contract.Door, error) {
	var out []contract.Door
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = doors(tx)
		return err
	})
	return out, err
}

func doors(tx *bolt.Tx) ([]contract.Door, error) {
	var out []contract.Door
	err := tx.Bucket(bucketDoors).ForEach(func(_, v []byte) error {
		var d contract.Door
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// EnsureDoors creates doors 1..n of the given size when the locker has no
// doors at all (the simulated locker's first start). It reports whether it did.
func (s *Store) EnsureDoors(n int, size string) (bool, error) {
	created := false
	err := s.writeRaw(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDoors)
		if k, _ := b.Cursor().First(); k != nil {
			return nil
		}
		for i := 1; i <= n; i++ {
			if err := putJSON(b, doorKey(i), contract.Door{ID: i, Size: size}); err != nil {
				return err
			}
		}
		created = n > 0
		return nil
	})
	return created, err
}

// UpsertPartner creates or replaces a partner and acks.
func (s *Store) UpsertPartner(now time.Time, msgID string, p contract.Partner) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error {
		return putJSON(tx.Bucket(bucketPartners), []byte(p.ID), p)
	})
}

// DeletePartner deletes a partner that no door is allocated to, and acks.
func (s *Store) DeletePartner(now time.Time, msgID, id string) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error {
		ds, err := doors(tx)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if d.Partner == id {
				return reject("partner %s has door %d allocated; reallocate it first: %w", id, d.ID, ErrInUse)
			}
		}
		var inUse error
		err = forEachJSON(tx.Bucket(bucketReservations), func(r Reservation) {
			if inUse == nil && r.Partner == id && r.Active() {
				inUse = reject("partner %s has reservation %s (%s); finish or cancel it first: %w", id, r.ID, r.Status, ErrInUse)
			}
		})
		if err != nil {
			return err
		}
		if inUse != nil {
			return inUse
		}
		return tx.Bucket(bucketPartners).Delete([]byte(id))
	})
}

// UpsertUser creates or replaces a user and acks.
func (s *Store) UpsertUser(now time.Time, msgID string, u contract.User) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error {
		return putJSON(tx.Bucket(bucketUsers), []byte(u.ID), u)
	})
}

// DeleteUser deletes a user and acks.
func (s *Store) DeleteUser(now time.Time, msgID, id string) ([]Message, error) {
	return s.apply(now, msgID, func(tx *bolt.Tx, o *Outbox) error {
		return tx.Bucket(bucketUsers).Delete([]byte(id))
	})
}

// Snapshot is the full state, sent on locky/up/snapshot in answer to locky/down/sync.
type Snapshot struct {
	MsgID        string                      `json:"msg_id"`
	At           time.Time                   `json:"at"`
	LastEventID  string                      `json:"last_event_id"`
	Doors        []contract.Door             `json:"doors"`
	Partners     []contract.Partner          `json:"partners"`
	Users        []contract.User             `json:"users"`
	Reservations []contract.ReservationState `json:"reservations"`
	OpenDoors    []Cycle                     `json:"open_doors"`
}

// Snapshot commits the full state as one upstream message, and the ack.
func (s *Store) Snapshot(now time.Time, msgID string) ([]Message, error) {
	return s.write(now, func(tx *bolt.Tx, o *Outbox) error {
		snap := Snapshot{MsgID: msgID, At: now.UTC(), Doors: []contract.Door{}, Partners: []contract.Partner{},
			Users: []contract.User{}, Reservations: []contract.ReservationState{}, OpenDoors: []Cycle{}}
		ds, err := doors(tx)
		if err != nil {
			return err
		}
		snap.Doors = append(snap.Doors, ds...) // [] and not null when the locker has no doors
		if err := forEachJSON(tx.Bucket(bucketPartners), func(p contract.Partner) { snap.Partners = append(snap.Partners, p) }); err != nil {
			return err
		}
		if err := forEachJSON(tx.Bucket(bucketUsers), func(u contract.User) { snap.Users = append(snap.Users, u) }); err != nil {
			return err
		}
		if err := forEachJSON(tx.Bucket(bucketCycles), func(c Cycle) { snap.OpenDoors = append(snap.OpenDoors, c) }); err != nil {
			return err
		}
		err = forEachJSON(tx.Bucket(bucketReservations), func(r Reservation) {
			snap.Reservations = append(snap.Reservations, r.State())
		})
		if err != nil {
			return err
		}
		if _, err := o.Append(contract.TopicSnapshot, func(seq uint64) any {
			snap.LastEventID = EventID(seq)
			return snap
		}); err != nil {
			return err
		}
		return o.Ack(msgID, nil)
	})
}

func forEachJSON[T any](b *bolt.Bucket, fn func(T)) error {
	return b.ForEach(func(_, v []byte) error {
		var x T
		if err := json.Unmarshal(v, &x); err != nil {
			return err
		}
		fn(x)
		return nil
	})
}

// Prune deletes delivered, returned and cancelled reservations and audit
// records older than the retention period (by now, the wall clock), and outbox
// messages that waited longer than the outbox age bound (by the store's uptime,
// never by now). It also saves the uptime, so that a gateway calling it
// periodically bounds what a power cut loses of it. It returns how many
// reservations it deleted.
func (s *Store) Prune(now time.Time) (int, error) {
	limit := now.Add(-s.cfg.Retention)
	pruned, dropped := 0, 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		var old []*Reservation
		err := forEachJSON(tx.Bucket(bucketReservations), func(r Reservation) {
			if !r.Active() && r.UpdatedAt.Before(limit) {
				old = append(old, &r)
			}
		})
		if err != nil {
			return err
		}
		for _, r := range old {
			if err := unindex(tx, r); err != nil {
				return err
			}
			if err := tx.Bucket(bucketReservations).Delete([]byte(r.ID)); err != nil {
				return err
			}
		}
		pruned = len(old)
		if err := pruneCommands(tx, limit); err != nil {
			return err
		}
		if err := s.pruneAudit(tx, limit); err != nil {
			return err
		}
		up, err := s.bookUptime(tx)
		if err != nil {
			return err
		}
		dropped, err = s.pruneOutbox(tx, up)
		return err
	})
	if err == nil && dropped > 0 {
		s.dropped("age", dropped)
	}
	return pruned, err
}

// LastSeq returns the last outbox sequence handed out.
func (s *Store) LastSeq() (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketOutbox).Sequence()
		return nil
	})
	return seq, err
}
