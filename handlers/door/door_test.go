package door_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/door"
	"github.com/locky-edge/locky/lockio/simdoors"
)

// startBroker starts the real broker on a free port, open to test clients.
var startBroker = gatewaytest.StartBroker

// newBank returns a simulated bank of n doors, every one closed.
func newBank(t *testing.T, n int) *simdoors.Bank {
	t.Helper()
	bank, err := simdoors.New(simdoors.Config{Doors: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bank.Stop)
	return bank
}

// startDoors runs a handler for drv on b until the test ends.
func startDoors(t *testing.T, b *broker.Broker, drv door.Driver) *door.Handler {
	t.Helper()
	h, err := door.New(door.Config{Driver: drv, Broker: b, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeWithin(t, h) })
	return h
}

// closeWithin closes h and fails the test if Close does not return.
func closeWithin(t *testing.T, h *door.Handler) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- h.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(gatewaytest.WaitLimit):
		t.Fatalf("Close did not return within %s", gatewaytest.WaitLimit)
	}
}

func isState(state string) func([]byte) bool {
	return func(p []byte) bool {
		var st contract.DoorState
		return json.Unmarshal(p, &st) == nil && st.State == state
	}
}

func openCommand(t *testing.T) []byte {
	t.Helper()
	p, err := json.Marshal(contract.DoorCommand{Action: "open", RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkOnlyOpen fails the test unless exactly the doors open are open in bank.
func checkOnlyOpen(t *testing.T, bank *simdoors.Bank, open ...int) {
	t.Helper()
	want := map[int]bool{}
	for _, d := range open {
		want[d] = true
	}
	for d, st := range bank.States() {
		if (st == contract.DoorOpen) != want[d] {
			t.Errorf("door %d is %s; want only doors %v open", d, st, open)
		}
	}
}

// TestCommandOpensTheDoorAndItsStateIsRetained: an open command on
// locky/doors/3/command opens door 3 of the driver, and every door's state
// is retained, so that a subscriber that connects afterwards learns it.
func TestCommandOpensTheDoorAndItsStateIsRetained(t *testing.T) {
	b := startBroker(t)
	bank := newBank(t, 4)
	startDoors(t, b, bank)
	watcher := gatewaytest.Connect(t, b.Addr(), contract.TopicDoorStates)
	controller := gatewaytest.Connect(t, b.Addr())

	controller.Publish(contract.DoorCommandTopic(3), contract.DoorCommand{Action: "open", RequestID: "r1"})
	watcher.Await(contract.DoorStateTopic(3), isState(contract.DoorOpen))
	checkOnlyOpen(t, bank, 3)

	late := gatewaytest.Connect(t, b.Addr(), contract.TopicDoorStates)
	late.Await(contract.DoorStateTopic(3), isState(contract.DoorOpen))
	for _, d := range []int{1, 2, 4} {
		late.Await(contract.DoorStateTopic(d), isState(contract.DoorClosed))
	}
	for _, m := range late.Received() {
		if m.Topic == contract.DoorStateTopic(3) && !isState(contract.DoorOpen)(m.Payload) {
			t.Errorf("a subscriber that connected after door 3 opened got %s on %s; want only the retained open state", m.Payload, m.Topic)
		}
	}
}

// TestCommandsThatDoNotDecodeOpenNothing: a command that does not decode,
// or that comes on a topic that names no door, opens no door; nor does one
// for a door the driver does not have.
func TestCommandsThatDoNotDecodeOpenNothing(t *testing.T) {
	b := startBroker(t)
	bank := newBank(t, 4)
	startDoors(t, b, bank)
	watcher := gatewaytest.Connect(t, b.Addr(), contract.TopicDoorStates)
	controller := gatewaytest.Connect(t, b.Addr())

	open := `{"action":"open","request_id":"r1"}`
	bad := []struct{ topic, payload string }{
		{contract.DoorCommandTopic(3), `{"action":"close"}`},
		{contract.DoorCommandTopic(3), `{"action":"OPEN"}`},
		{contract.DoorCommandTopic(3), `{"action":"open","door":3}`},
		{contract.DoorCommandTopic(3), `{"action":"open","Action":"open"}`},
		{contract.DoorCommandTopic(3), `{}`},
		{contract.DoorCommandTopic(3), `open`},
		{contract.DoorCommandTopic(3), ``},
		{"locky/doors/03/command", open},
		{"locky/doors/3a/command", open},
		{"locky/doors/-3/command", open},
		{"locky/doors/0/command", open},
		{fmt.Sprintf("locky/doors/%d/command", contract.MaxDoor+1), open},
		{contract.DoorCommandTopic(9), open}, // the driver has no door 9
	}
	for _, c := range bad {
		controller.Publish(c.topic, c.payload)
	}
	// The handler takes the commands of one client in order: once this one
	// has opened door 1, every command above has been dealt with.
	controller.Publish(contract.DoorCommandTopic(1), open)
	watcher.Await(contract.DoorStateTopic(1), isState(contract.DoorOpen))

	checkOnlyOpen(t, bank, 1)
	for _, m := range watcher.Received() {
		if m.Topic != contract.DoorStateTopic(1) && !isState(contract.DoorClosed)(m.Payload) {
			t.Errorf("state %s on %s after bad commands; want every door but 1 closed", m.Payload, m.Topic)
		}
	}
}

// TestCommandRightAfterStartIsTaken: Start has subscribed by the time it
// returns, so a command published at once is not missed.
func TestCommandRightAfterStartIsTaken(t *testing.T) {
	b := startBroker(t)
	bank := newBank(t, 2)
	watcher := gatewaytest.Connect(t, b.Addr(), contract.TopicDoorStates)
	startDoors(t, b, bank)
	if err := b.Publish(contract.DoorCommandTopic(2), openCommand(t), false, 1); err != nil {
		t.Fatal(err)
	}
	watcher.Await(contract.DoorStateTopic(2), isState(contract.DoorOpen))
	checkOnlyOpen(t, bank, 2)
}

// TestClose: Start may be called once and not after Close; Close is safe
// before Start and twice after it, waits for the handler's goroutine (goleak
// checks that none is left), and a command that arrives after it reaches no
// door.
func TestClose(t *testing.T) {
	b := startBroker(t)
	bank := newBank(t, 2)
	h, err := door.New(door.Config{Driver: bank, Broker: b, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(t.Context()); err == nil {
		t.Error("a second Start succeeded; want an error (it would start a second goroutine that Close never stops)")
	}
	closeWithin(t, h)
	closeWithin(t, h)
	if err := h.Start(t.Context()); err == nil {
		t.Error("Start after Close succeeded; want an error")
	}
	early, err := door.New(door.Config{Driver: bank, Broker: b, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	closeWithin(t, early) // before Start
	// The broker calls the handler on the publisher's goroutine: when
	// Publish returns, the command has been taken or refused.
	if err := b.Publish(contract.DoorCommandTopic(2), openCommand(t), false, 1); err != nil {
		t.Fatal(err)
	}
	checkOnlyOpen(t, bank)
}

func TestNewRefusesAMissingPart(t *testing.T) {
	b := startBroker(t)
	bank := newBank(t, 1)
	f := func(cfg door.Config) {
		t.Helper()
		if h, err := door.New(cfg); err == nil {
			t.Errorf("New(%+v) = %v, nil; want an error naming what is required", cfg, h)
		}
	}
	f(door.Config{Broker: b})
	f(door.Config{Driver: bank})
	f(door.Config{})
}

// gatedBank is the simulated bank whose Open waits, once it has said which
// door it is opening, until release is closed: a lock board busy with one
// door while more commands queue.
type gatedBank struct {
	*simdoors.Bank
	opening chan int
	release chan struct{}
}

func (g *gatedBank) Open(d int) error {
	g.opening <- d
	<-g.release
	return g.Bank.Open(d)
}

// TestNoQueuedCommandReachesTheDriverAfterTheStop: once the handler's
// context has ended, the commands still queued behind the one the driver is
// busy with open no door. The handler is stopped while its goroutine is in
// the driver, so that when it comes back both its stop and its next command
// are ready; the rounds make a coin toss between them fail the test.
func TestNoQueuedCommandReachesTheDriverAfterTheStop(t *testing.T) {
	for round := range 32 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			b := startBroker(t)
			bank := &gatedBank{Bank: newBank(t, 4), opening: make(chan int, 4), release: make(chan struct{})}
			ctx, stop := context.WithCancel(t.Context())
			h, err := door.New(door.Config{Driver: bank, Broker: b, Logger: testenv.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Start(ctx); err != nil {
				t.Fatal(err)
			}
			for _, d := range []int{1, 2, 3} { // taken in order; 2 and 3 queue
				if err := b.Publish(contract.DoorCommandTopic(d), openCommand(t), false, 1); err != nil {
					t.Fatal(err)
				}
			}
			if d := <-bank.opening; d != 1 {
				t.Fatalf("the driver opens door %d first; want 1", d)
			}
			stop()
			close(bank.release)
			closeWithin(t, h)
			checkOnlyOpen(t, bank.Bank, 1)
		})
	}
}
