package main

import (
	"sync"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// pool is the doors of the upgrades bench and where each is in the life of
// its reservation: a free door takes the next code (the deposit, then the
// pickup); the status event after its door closed frees it again; a
// delivered reservation's door first gets a new reservation.
type pool struct {
	ready   chan int // doors free for their next code
	upserts chan int // doors whose reservation was delivered: a new one goes on them

	mu     sync.Mutex
	doors  map[int]*poolDoor
	byRes  map[string]int // reservation id → door
	next   int            // index of the next new reservation
	cycles []*cycleRecord
	other  map[string]int // events of other types, by type
}

type poolDoor struct {
	res    int          // the reservation on it
	stored bool         // its deposit is done: its next code is the pickup
	taken  bool         // a code is under way, or its status event
	cycle  *cycleRecord // the door cycle in flight, once its code was answered "opened"
}

// cycleRecord is one door cycle as the bench's clients saw it.
type cycleRecord struct {
	res    string    // its reservation
	pickup bool      // a pickup, else a deposit
	opened time.Time // the screen got "opened"
	closed time.Time // the board reported the door closed; zero until then
	acked  bool      // the gateway's broker acknowledged that report (PUBACK)
	event  time.Time // the back-end got its status event; zero if it never came
	// inStore: no event came, but the database shows the reservation past
	// the cycle once the gateway stopped (checkStore).
	inStore bool
}

func (c *cycleRecord) completed() bool { return !c.event.IsZero() || c.inStore }

// newPool holds doors 1..n with reservation i-1 arriving on door i, as
// upsertReservations(n, n) leaves them.
func newPool(n int) *pool {
	p := &pool{ready: make(chan int, n), upserts: make(chan int, n), doors: map[int]*poolDoor{},
		byRes: map[string]int{}, next: n, other: map[string]int{}}
	for door := 1; door <= n; door++ {
		p.doors[door] = &poolDoor{res: door - 1}
		p.byRes[reservationID(door-1)] = door
		p.ready <- door
	}
	return p
}

// take returns a free door and the code to enter for it; ok is false when
// no door is free.
func (p *pool) take() (door int, code string, ok bool) {
	select {
	case door = <-p.ready:
	default:
		return 0, "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.doors[door]
	d.taken = true
	if d.stored {
		return door, pickupCode(d.res), true
	}
	return door, depositCode(d.res), true
}

// opened records that door's code was answered "opened" at at.
func (p *pool) opened(door int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := p.doors[door]; d.cycle == nil {
		d.cycle = &cycleRecord{res: reservationID(d.res), pickup: d.stored, opened: at}
		p.cycles = append(p.cycles, d.cycle)
	}
}

// closed records that the board reports door closed at at; it returns the
// cycle, nil if none is in flight on door.
func (p *pool) closed(door int, at time.Time) *cycleRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := p.doors[door]; d != nil && d.cycle != nil && d.cycle.closed.IsZero() {
		d.cycle.closed = at
		return d.cycle
	}
	return nil
}

// acked records that the report closing c got its PUBACK.
func (p *pool) acked(c *cycleRecord) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.acked = true
}

// event takes a status event the back-end received at at: the deposit's
// frees the door for the pickup, the pickup's asks for a new reservation.
func (p *pool) event(ev contract.Event, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	door, ok := p.byRes[ev.Reservation]
	d := p.doors[door]
	want := contract.EventStored
	if ok && d.stored {
		want = contract.EventDelivered
	}
	if !ok || ev.Type != want || !d.taken || reservationID(d.res) != ev.Reservation {
		p.other[ev.Type]++
		return
	}
	if d.cycle != nil {
		d.cycle.event = at
		d.cycle = nil
	}
	if ev.Type == contract.EventStored {
		d.stored, d.taken = true, false
		p.ready <- door
		return
	}
	p.upserts <- door
}

// renew puts a new reservation on door and returns its index.
func (p *pool) renew(door int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.doors[door]
	delete(p.byRes, reservationID(d.res))
	d.res, d.stored = p.next, false
	p.byRes[reservationID(d.res)] = door
	p.next++
	return d.res
}

// free makes door take codes again, once its new reservation is acked.
func (p *pool) free(door int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doors[door].taken = false
	p.ready <- door
}

// waiting returns how many doors are still taken: a code or a status event
// under way, or one that never came.
func (p *pool) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, d := range p.doors {
		if d.taken {
			n++
		}
	}
	return n
}

// inFlight returns the door cycles open at t (answered "opened" before it,
// reported closed after it) and how many of them completed.
func (p *pool) inFlight(t time.Time) (open, completed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cycles {
		if c.opened.Before(t) && c.closed.After(t) {
			open++
			if c.completed() {
				completed++
			}
		}
	}
	return open, completed
}
