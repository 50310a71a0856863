package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestAUsedCodeNeverOpensTheNextParcelsDoor: R1 is collected from door 4;
// within R1's grace period R2 is deposited in door 4. R1's codes, typed
// again, must not open door 4 on R2's parcel (theft path 3).
func TestAUsedCodeNeverOpensTheNextParcelsDoor(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 4, "410001", "410002", "410003"))
	c.Code("410001", "dep1")
	c.Display("dep1", contract.ResultOpened)
	g.SimDoor(t, 4, "close")
	c.Event(contract.EventStored, "R1", 4)
	c.Code("410002", "pick1")
	c.Display("pick1", contract.ResultOpened)
	g.SimDoor(t, 4, "close")
	c.Event(contract.EventDelivered, "R1", 4)

	// The customer may still undo within the grace period: the door's last
	// cycle is their own.
	c.Code("410002", "undo")
	c.Display("undo", contract.ResultOpened)
	g.SimDoor(t, 4, "close")
	c.Event(contract.EventReopened, "R1", 4)

	c.MustAck("reservations", reservation("m-2", "R2", 1, 4, "420001", "420002", "420003"))
	c.Code("420001", "dep2")
	c.Display("dep2", contract.ResultOpened)
	g.SimDoor(t, 4, "close")
	c.Event(contract.EventStored, "R2", 4)
	commands := c.Count(contract.DoorCommandTopic(4), anyPayload)

	for i, code := range []string{"410002", "410001"} { // R1's pickup, then its deposit code
		id := fmt.Sprintf("thief-%d", i)
		c.Code(code, id)
		if d := c.Display(id, contract.ResultInvalidCode); d.Door != 0 {
			t.Fatalf("R1's used code %s: %+v; want invalid_code naming no door", code, d)
		}
	}
	if n := c.Count(contract.DoorCommandTopic(4), anyPayload); n != commands {
		t.Fatalf("%d door 4 commands after R2 was deposited; want %d (none for R1's codes)", n, commands)
	}
	if got := statusOf(t, g, "R2"); got != contract.StatusStored {
		t.Fatalf("R2 is %q; want stored, in its door", got)
	}
}

// TestAValidCodeBetweenGuessesBuysNothing: a guesser on many client ids who
// types a customer's pickup code (within its grace period) between wrong
// codes still gets only the lockout's wrong codes (theft path 2).
func TestAValidCodeBetweenGuessesBuysNothing(t *testing.T) {
	cfg := testConfig(t)
	cfg.LockoutBase = cfg.LockoutMax // the lockout cannot end during the test, however slow the machine
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 3, "310001", "310002", "310003"))
	c.Code("310001", "dep")
	c.Display("dep", contract.ResultOpened)
	g.SimDoor(t, 3, "close")
	c.Event(contract.EventStored, "R1", 3)
	c.Code("310002", "pick")
	c.Display("pick", contract.ResultOpened)
	g.SimDoor(t, 3, "close")
	c.Event(contract.EventDelivered, "R1", 3)

	var guessers []*gatewaytest.Client
	for i := 0; i < 6; i++ {
		guessers = append(guessers, connect(t, g.MQTTAddr(), contract.TopicScreenDisplay))
	}
	invalid, locked, reopens := 0, 0, 0
	isReopened := func(p []byte) bool {
		var e contract.Event
		return json.Unmarshal(p, &e) == nil && e.Type == contract.EventReopened && e.Reservation == "R1"
	}
	for i := 0; i < 20; i++ {
		valid := fmt.Sprintf("valid-%d", i)
		c.Code("310002", valid)
		if d := c.Await(contract.TopicScreenDisplay, func(p []byte) bool { return requestIs(p, valid) }); resultOf(d.Payload) == contract.ResultOpened {
			g.SimDoor(t, 3, "close")
			reopens++
			c.AwaitCount(contract.TopicEvents, isReopened, reopens)
		}
		guess, id := guessers[i%len(guessers)], fmt.Sprintf("guess-%d", i)
		guess.Code(fmt.Sprintf("%06d", 900000+i), id)
		switch r := resultOf(guess.Await(contract.TopicScreenDisplay, func(p []byte) bool { return requestIs(p, id) }).Payload); r {
		case contract.ResultInvalidCode:
			invalid++
		case contract.ResultLockedOut:
			locked++
		default:
			t.Fatalf("guess %d: %q; want invalid_code or locked_out", i, r)
		}
	}
	if invalid != cfg.LockoutThreshold-1 || locked != 20-invalid {
		t.Fatalf("%d invalid_code and %d locked_out for 20 guesses with a valid code between each; want %d, then locked out",
			invalid, locked, cfg.LockoutThreshold-1)
	}
}

func displayOf(p []byte) contract.Display {
	var d contract.Display
	_ = json.Unmarshal(p, &d)
	return d
}

func requestIs(p []byte, id string) bool { return displayOf(p).RequestID == id }

func resultOf(p []byte) string { return displayOf(p).Result }

// TestARedeliveredSupportCommandOpensNothing: delivery from the cloud is at
// least once, so the same open_door can come twice; the second is acked
// again and opens nothing, as the first opening is already closed and nobody
// from support may be there any more.
func TestARedeliveredSupportCommandOpensNothing(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	cmd := contract.Command{MsgID: "c-1", Command: contract.CommandOpenDoor, Door: 8, Reason: "ticket 881"}
	c.Publish(contract.TopicDownCommands, cmd)
	if a := c.Ack("c-1"); !a.OK {
		t.Fatalf("ack %+v; want ok", a)
	}
	c.Await(contract.DoorStateTopic(8), func(p []byte) bool { return strings.Contains(string(p), `"open"`) })
	g.SimDoor(t, 8, "close")
	c.Event(contract.EventDoorClosed, "", 8)

	c.Publish(contract.TopicDownCommands, cmd) // the cloud redelivers it
	isAck := func(p []byte) bool { return strings.Contains(string(p), `"msg_id":"c-1"`) }
	c.AwaitCount(contract.TopicAcks, isAck, 2)
	// A later command's ack comes after anything the repeat could have caused.
	c.Publish(contract.TopicDownCommands, contract.Command{MsgID: "c-2", Command: contract.CommandOpenDoor, Door: 99, Reason: "marker"})
	c.Ack("c-2")
	if n := c.Count(contract.DoorCommandTopic(8), anyPayload); n != 1 {
		t.Fatalf("%d open commands for door 8; want 1 (the repeat opens nothing)", n)
	}
	if n := c.Count(contract.TopicEvents, func(p []byte) bool { return strings.Contains(string(p), contract.EventRemoteOpen) }); n != 1 {
		t.Fatalf("%d door.remote_open events; want 1", n)
	}
}

// TestADeletedDoorOpensForNobody: the back-end deletes a door whose last
// parcel was just collected; the customer's pickup code, still within its
// grace period, must not command it.
func TestADeletedDoorOpensForNobody(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 9, "910001", "910002", "910003"))
	c.Code("910001", "dep")
	c.Display("dep", contract.ResultOpened)
	g.SimDoor(t, 9, "close")
	c.Event(contract.EventStored, "R1", 9)
	c.Code("910002", "pick")
	c.Display("pick", contract.ResultOpened)
	g.SimDoor(t, 9, "close")
	c.Event(contract.EventDelivered, "R1", 9)
	c.MustAck("doors", contract.DownMessage{MsgID: "m-2", Op: contract.OpDelete, Door: &contract.Door{ID: 9}})
	commands := c.Count(contract.DoorCommandTopic(9), anyPayload)

	c.Code("910002", "again")
	c.Display("again", contract.ResultInvalidCode)
	if n := c.Count(contract.DoorCommandTopic(9), anyPayload); n != commands {
		t.Fatalf("%d commands for the deleted door 9; want %d", n, commands)
	}
}
