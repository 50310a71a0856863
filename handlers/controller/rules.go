package controller

import (
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// Verdict is what a code may do for its reservation right now.
type Verdict int

const (
	// Refuse: the code does not open anything now (invalid_code).
	Refuse Verdict = iota
	// Open: the code opens the door.
	Open
	// Expired: the pickup code of an expired reservation (expired).
	Expired
)

// Judge decides whether a code of the given kind opens the reservation's door
// at now (SPEC §1, §5): deposit while arriving, pickup while stored and not
// expired, courier while stored, and any code within its grace period after
// its first use, but only while the door's last cycle (last, nil when
// unknown) is that code's own: a used code never reopens a door that has
// since held someone else's parcel or been opened for another reason. Pure:
// unit-tested without a broker.
func Judge(r *store.Reservation, kind string, now time.Time, grace time.Duration, last *store.Cycle) Verdict {
	c := r.Codes[kind]
	if c == nil {
		return Refuse
	}
	if !c.UsedAt.IsZero() {
		own := last != nil && last.Door == r.Door && last.Reservation == r.ID && last.Kind == kind
		if own && inGrace(c.UsedAt, now, grace) && r.Status != contract.StatusCancelled {
			return Open
		}
		return Refuse
	}
	switch {
	case kind == contract.KindDeposit && r.Status == contract.StatusArriving:
		return Open
	case kind == contract.KindPickup && r.Status == contract.StatusStored:
		if expired(r, now) {
			return Expired
		}
		return Open
	case kind == contract.KindCourier && r.Status == contract.StatusStored:
		return Open
	}
	return Refuse
}

// inGrace reports whether now is within grace after used. A wall clock that
// went back before used (a Pi without a real-time clock before NTP) does not
// count as "no time elapsed": no clock step may revive a code, so the grace
// period is over. The courier's undo is lost in that rare case; a door never
// opens for a code whose time cannot be told.
func inGrace(used, now time.Time, grace time.Duration) bool {
	d := now.Sub(used)
	return d >= 0 && d < grace
}

func expired(r *store.Reservation, now time.Time) bool {
	return !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt)
}

// Close decides what the closing of a door does to the reservation that the
// cycle opened it for: deposit → stored, pickup → delivered, courier on an
// expired parcel → returned, and anything else (a courier correction, a code
// within its grace period) reopened with the status unchanged. occupied is
// what the door's occupancy sensor said at the closing, nil where the door
// has none: a deposit that leaves the door empty stores nothing (the code
// stays unused for the courier's next try), and a pickup that leaves the
// parcel in is delivered all the same (the customer opened the door) but
// said to support.
func Close(c store.Cycle, r *store.Reservation, now time.Time, occupied *bool) store.Transition {
	first := r.Codes[c.Kind] != nil && r.Codes[c.Kind].UsedAt.IsZero()
	switch {
	case first && c.Kind == contract.KindDeposit && r.Status == contract.StatusArriving:
		if occupied != nil && !*occupied {
			return store.Transition{EventType: contract.EventEmptyAfterDeposit, Unused: true}
		}
		return store.Transition{Status: contract.StatusStored, EventType: contract.EventStored}
	case first && c.Kind == contract.KindPickup && r.Status == contract.StatusStored:
		t := store.Transition{Status: contract.StatusDelivered, EventType: contract.EventDelivered}
		if occupied != nil && *occupied {
			t.Also = contract.EventOccupiedAfterPickup
		}
		return t
	case c.Kind == contract.KindCourier && r.Status == contract.StatusStored && expired(r, now):
		return store.Transition{Status: contract.StatusReturned, EventType: contract.EventReturned}
	}
	return store.Transition{EventType: contract.EventReopened}
}

// lockout bounds code guessing (SPEC §5.5): Threshold invalid codes within
// Window lock the screen for Base, doubling with each lockout up to Max. A
// valid code changes nothing here: a guesser who holds one working code (a
// pickup code within its grace period, a code whose door is held shut) gains
// no attempts by typing it between guesses. The doubling starts again only
// after resetAfter without any invalid code once the last lockout ended. The bound
// this gives is in the README's threat model and TestLockoutBound.
type lockout struct {
	threshold int
	window    time.Duration
	base, max time.Duration
	// resetAfter without an invalid attempt, after the last lockout
	// ended, starts the doubling again from base.
	resetAfter time.Duration

	failures []time.Time   // invalid attempts within the window
	until    time.Time     // locked while now is before until
	length   time.Duration // how long the lockout ending at until lasts
	level    int           // lockouts so far in this series
	last     time.Time     // time of the last invalid attempt
}

// locked returns the time left of a running lockout, or 0.
func (l *lockout) locked(now time.Time) time.Duration {
	if now.Before(l.until) {
		return l.until.Sub(now)
	}
	return 0
}

// fail records an invalid attempt and returns the new lockout's duration when
// this attempt starts one, or 0.
func (l *lockout) fail(now time.Time) time.Duration {
	quietSince := l.last
	if l.until.After(quietSince) {
		quietSince = l.until
	}
	if !l.last.IsZero() && now.Sub(quietSince) >= l.resetAfter {
		l.level = 0
	}
	l.last = now
	kept := l.failures[:0]
	for _, t := range l.failures {
		if now.Sub(t) < l.window {
			kept = append(kept, t)
		}
	}
	l.failures = append(kept, now)
	if len(l.failures) < l.threshold {
		return 0
	}
	d := l.base << l.level
	if d > l.max || d <= 0 {
		d = l.max
	} else {
		l.level++
	}
	l.failures = l.failures[:0]
	l.until = now.Add(d)
	l.length = d
	return d
}

// state is what is persisted so that a restart resumes the lockout.
func (l *lockout) state() store.Lockout {
	out := store.Lockout{Level: l.level, Failures: append([]time.Time(nil), l.failures...)}
	if !l.until.IsZero() {
		out.Until, out.For = l.until.UTC(), l.length
	}
	for i, t := range out.Failures {
		out.Failures[i] = t.UTC()
	}
	return out
}

// restore resumes a persisted lockout at now. A wall clock that stepped back
// across the restart shortens nothing and lengthens nothing: the time left is
// at most the lockout's own length (or Max for a record without it).
func (l *lockout) restore(s store.Lockout, now time.Time) time.Duration {
	l.level = s.Level
	for _, t := range s.Failures {
		if d := now.Sub(t); d < l.window && d > -l.window {
			l.failures = append(l.failures, now.Add(-max(d, 0)))
		}
	}
	left := s.Until.Sub(now)
	if left <= 0 {
		return 0
	}
	limit := s.For
	if limit <= 0 || limit > l.max {
		limit = l.max
	}
	left = min(left, limit)
	l.until, l.length, l.last = now.Add(left), left, now
	return left
}
