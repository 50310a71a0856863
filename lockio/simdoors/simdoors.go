// Package simdoors is a simulated door bank: doors open on command and close
// when told (over HTTP, as a person closing the door would) or after an
// auto-close delay. It can also be told to jam, fault or be forced open, so
// that every branch of the workflow can be exercised without hardware.
//
// Its place in the layering: a driver, on the contract only.
package simdoors

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// Config configures a Bank.
type Config struct {
	// Doors is the number of doors, numbered 1..Doors. Required.
	Doors int
	// AutoClose closes an opened door after this delay. Zero means doors close
	// only when told.
	AutoClose time.Duration
}

// ErrUnknownDoor is returned for a door number outside 1..Doors.
var ErrUnknownDoor = errors.New("no such simulated door")

// ErrStopped is returned by Open after Stop: a stopped bank opens nothing.
var ErrStopped = errors.New("simulated doors stopped; start a new bank")

// Bank is the simulated door bank. It is safe for concurrent use.
type Bank struct {
	cfg Config

	mu     sync.Mutex
	states map[int]string
	jammed map[int]bool
	timers map[int]*time.Timer
	report func(door int, st contract.DoorState)
	closed bool
}

// New returns a bank with every door closed.
func New(cfg Config) (*Bank, error) {
	if cfg.Doors <= 0 || cfg.Doors > contract.MaxDoor {
		return nil, fmt.Errorf("simdoors: %d doors; use 1..%d", cfg.Doors, contract.MaxDoor)
	}
	b := &Bank{cfg: cfg, states: map[int]string{}, jammed: map[int]bool{}, timers: map[int]*time.Timer{}}
	for i := 1; i <= cfg.Doors; i++ {
		b.states[i] = contract.DoorClosed
	}
	return b, nil
}

// Watch registers the function that receives every state change, and reports
// the current state of every door to it at once.
func (b *Bank) Watch(report func(door int, st contract.DoorState)) {
	b.mu.Lock()
	b.report = report
	doors := b.doorsLocked()
	states := map[int]string{}
	for _, d := range doors {
		states[d] = b.states[d]
	}
	b.mu.Unlock()
	for _, d := range doors {
		report(d, contract.DoorState{State: states[d], Reason: "simulator start", At: time.Now().UTC()})
	}
}

// Doors returns the door numbers.
func (b *Bank) Doors() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.doorsLocked()
}

func (b *Bank) doorsLocked() []int {
	out := make([]int, 0, len(b.states))
	for d := range b.states {
		out = append(out, d)
	}
	sort.Ints(out)
	return out
}

// States returns the state of every door.
func (b *Bank) States() map[int]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[int]string, len(b.states))
	for d, s := range b.states {
		out[d] = s
	}
	return out
}

// Jammed returns the doors that ignore open commands (see Jam).
func (b *Bank) Jammed() map[int]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[int]bool, len(b.jammed))
	for d, j := range b.jammed {
		if j {
			out[d] = true
		}
	}
	return out
}

// Open unlocks a door, as the lock board does on an open command. A jammed
// door stays shut and reports nothing.
func (b *Bank) Open(door int) error {
	b.mu.Lock()
	if _, ok := b.states[door]; !ok {
		b.mu.Unlock()
		return fmt.Errorf("door %d: %w", door, ErrUnknownDoor)
	}
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("door %d: %w", door, ErrStopped)
	}
	if b.jammed[door] {
		b.mu.Unlock()
		return nil
	}
	if b.cfg.AutoClose > 0 {
		if t := b.timers[door]; t != nil {
			t.Stop()
		}
		b.timers[door] = time.AfterFunc(b.cfg.AutoClose, func() { _ = b.Close(door) })
	}
	b.mu.Unlock()
	return b.set(door, contract.DoorOpen, "opened on command")
}

// Close closes a door, as a person pushing it shut.
func (b *Bank) Close(door int) error {
	return b.set(door, contract.DoorClosed, "closed")
}

// Force opens a door without a command (a break-in, or a lock failing open).
func (b *Bank) Force(door int) error {
	return b.set(door, contract.DoorOpen, "forced")
}

// Fault makes a door report a fault.
func (b *Bank) Fault(door int, reason string) error {
	return b.set(door, contract.DoorFault, reason)
}

// Jam makes a door ignore open commands (jam=true) or obey them again.
func (b *Bank) Jam(door int, jam bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.states[door]; !ok {
		return fmt.Errorf("door %d: %w", door, ErrUnknownDoor)
	}
	b.jammed[door] = jam
	return nil
}

func (b *Bank) set(door int, state, reason string) error {
	b.mu.Lock()
	if _, ok := b.states[door]; !ok {
		b.mu.Unlock()
		return fmt.Errorf("door %d: %w", door, ErrUnknownDoor)
	}
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.states[door] = state
	report := b.report
	b.mu.Unlock()
	if report != nil {
		report(door, contract.DoorState{State: state, Reason: reason, At: time.Now().UTC()})
	}
	return nil
}

// Stop stops the auto-close timers; the bank reports nothing after it.
func (b *Bank) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, t := range b.timers {
		t.Stop()
	}
}
