package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/handlers/contract"
)

func anyPayload([]byte) bool { return true }

func TestDepositThenPickup(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")

	c.MustAck("reservations", reservation("m-1", "R12", 1, 7, "123456", "654321", "777000"))

	c.Code("123456", "r1")
	c.Await(contract.DoorCommandTopic(7), func(p []byte) bool { return strings.Contains(string(p), `"r1"`) })
	if d := c.Display("r1", contract.ResultOpened); d.Door != 7 {
		t.Fatalf("opened door %d; want 7", d.Door)
	}
	g.SimDoor(t, 7, "close")
	ev := c.Event(contract.EventStored, "R12", 7)
	if ev.Status != contract.StatusStored || ev.EventID == "" {
		t.Fatalf("stored event %+v", ev)
	}
	if got := statusOf(t, g, "R12"); got != contract.StatusStored {
		t.Fatalf("status %q; want stored", got)
	}

	c.Code("654321", "r2")
	c.Display("r2", contract.ResultOpened)
	g.SimDoor(t, 7, "close")
	del := c.Event(contract.EventDelivered, "R12", 7)
	if del.EventID <= ev.EventID {
		t.Fatalf("event ids do not increase: %s then %s", ev.EventID, del.EventID)
	}
	if got := statusOf(t, g, "R12"); got != contract.StatusDelivered {
		t.Fatalf("status %q; want delivered", got)
	}
	// The door is free for the next parcel.
	c.MustAck("reservations", reservation("m-2", "R13", 1, 7, "223344", "556677", "889900"))
}

func TestCourierCorrectionAndGrace(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 2, "111222", "333444", "555666"))
	c.Code("111222", "dep")
	c.Display("dep", contract.ResultOpened)
	g.SimDoor(t, 2, "close")
	c.Event(contract.EventStored, "R1", 2)

	// Within its grace period the deposit code reopens the door; the status stays.
	c.Code("111222", "again")
	c.Display("again", contract.ResultOpened)
	g.SimDoor(t, 2, "close")
	if e := c.Event(contract.EventReopened, "R1", 2); e.CodeKind != contract.KindDeposit || e.Status != contract.StatusStored {
		t.Fatalf("reopened event %+v; want deposit, stored", e)
	}

	// The courier back-up code reopens the door and leaves the parcel stored.
	c.Code("555666", "courier")
	c.Display("courier", contract.ResultOpened)
	g.SimDoor(t, 2, "close")
	c.Await(contract.TopicEvents, func(p []byte) bool {
		var e contract.Event
		return json.Unmarshal(p, &e) == nil && e.Type == contract.EventReopened && e.CodeKind == contract.KindCourier
	})
	if got := statusOf(t, g, "R1"); got != contract.StatusStored {
		t.Fatalf("status %q after courier correction; want stored", got)
	}
}

func TestWrongCodesLockTheScreenOut(t *testing.T) {
	cfg := testConfig(t)
	cfg.LockoutThreshold = 3
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 1, "100001", "100002", "100003"))

	c.Code("999991", "w1")
	c.Display("w1", contract.ResultInvalidCode)
	c.Code("999992", "w2")
	c.Display("w2", contract.ResultInvalidCode)
	c.Code("999993", "w3")
	d := c.Display("w3", contract.ResultLockedOut)
	if d.RetryAfterS != 60 {
		t.Fatalf("retry_after_s %d; want 60 (the first lockout)", d.RetryAfterS)
	}
	c.Event(contract.EventLockout, "", 0)
	// Even a valid code is refused while locked out, and opens nothing.
	c.Code("100001", "valid")
	if d := c.Display("valid", contract.ResultLockedOut); d.RetryAfterS < 1 || d.RetryAfterS > 60 {
		t.Fatalf("retry_after_s %d; want 1..60", d.RetryAfterS)
	}
	if n := c.Count(contract.DoorCommandTopic(1), anyPayload); n != 0 {
		t.Fatalf("%d door commands during a lockout; want 0", n)
	}
}

func TestDoorThatDoesNotOpenIsAFaultAndKeepsTheCode(t *testing.T) {
	cfg := testConfig(t)
	cfg.DoorTimeout = 200 * time.Millisecond
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 4, "400001", "400002", "400003"))

	g.SimDoor(t, 4, "jam")
	c.Code("400001", "r1")
	if d := c.Display("r1", contract.ResultDoorFault); d.Door != 4 {
		t.Fatalf("fault for door %d; want 4", d.Door)
	}
	c.Event(contract.EventDoorFault, "R1", 4)
	if got := statusOf(t, g, "R1"); got != contract.StatusArriving {
		t.Fatalf("status %q; want arriving", got)
	}

	g.SimDoor(t, 4, "unjam")
	c.Code("400001", "r2")
	c.Display("r2", contract.ResultOpened)
	g.SimDoor(t, 4, "close")
	c.Event(contract.EventStored, "R1", 4)
}

func TestDoorLeftOpenRaisesAnAlarm(t *testing.T) {
	cfg := testConfig(t)
	cfg.LeftOpenAfter = 100 * time.Millisecond
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 5, "500001", "500002", "500003"))
	c.Code("500001", "r1")
	c.Display("r1", contract.ResultOpened)
	c.Event(contract.EventLeftOpen, "R1", 5)
	// Closing it late still completes the delivery.
	g.SimDoor(t, 5, "close")
	c.Event(contract.EventStored, "R1", 5)
}

func TestExpiredParcelGoesBackWithTheCourierCode(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	m := reservation("m-1", "R1", 1, 6, "600001", "600002", "600003")
	past := time.Now().Add(-time.Hour).UTC()
	m.Reservation.ExpiresAt = &past
	c.MustAck("reservations", m)
	c.Code("600001", "dep")
	c.Display("dep", contract.ResultOpened)
	g.SimDoor(t, 6, "close")
	c.Event(contract.EventStored, "R1", 6)

	c.Code("600002", "pick")
	c.Display("pick", contract.ResultExpired)
	if n := c.Count(contract.DoorCommandTopic(6), func(p []byte) bool { return strings.Contains(string(p), "pick") }); n != 0 {
		t.Fatalf("the expired pickup code opened the door")
	}
	c.Code("600003", "ret")
	c.Display("ret", contract.ResultOpened)
	g.SimDoor(t, 6, "close")
	c.Event(contract.EventReturned, "R1", 6)
	if got := statusOf(t, g, "R1"); got != contract.StatusReturned {
		t.Fatalf("status %q; want returned", got)
	}
}

func TestForcedDoorRaisesAnEvent(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	g.SimDoor(t, 9, "force")
	c.Event(contract.EventForcedOpen, "", 9)
}

func TestSecondCodeForADoorInACycleIsBusy(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 3, "300001", "300002", "300003"))
	c.Code("300001", "first")
	c.Display("first", contract.ResultOpened)
	c.Code("300001", "second")
	c.Display("second", contract.ResultBusy)
}

func TestSupportOpensADoorRemotely(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.Publish(contract.TopicDownCommands, contract.Command{MsgID: "c-1", Command: contract.CommandOpenDoor, Door: 8, Reason: "ticket 881"})
	if a := c.Ack("c-1"); !a.OK {
		t.Fatalf("ack %+v; want ok", a)
	}
	c.Await(contract.DoorStateTopic(8), func(p []byte) bool { return strings.Contains(string(p), `"open"`) })
	c.Event(contract.EventRemoteOpen, "", 8)
	audit, err := g.Store().Audit(10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range audit {
		if a.Door == 8 && a.Kind == "support" && a.Reason == "ticket 881" {
			found = true
		}
	}
	if !found {
		t.Fatalf("remote opening not audited: %+v", audit)
	}

	c.Publish(contract.TopicDownCommands, contract.Command{MsgID: "c-2", Command: contract.CommandOpenDoor, Door: 99, Reason: "typo"})
	if a := c.Ack("c-2"); a.OK || !strings.Contains(a.Error, "door 99") {
		t.Fatalf("ack %+v; want an error naming door 99", a)
	}
}

func TestMQTT5ResponseTopicIsHonoured(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "kiosk/replies")
	c.PublishWith(&paho.Publish{Topic: contract.TopicScreenCode, QoS: 1,
		Payload:    []byte(`{"code":"000000","request_id":"q1"}`),
		Properties: &paho.PublishProperties{ResponseTopic: "kiosk/replies", CorrelationData: []byte("corr-42")}})
	m := c.Await("kiosk/replies", func(p []byte) bool { return strings.Contains(string(p), `"q1"`) })
	if m.Props == nil || string(m.Props.CorrelationData) != "corr-42" {
		t.Fatalf("correlation data %+v; want corr-42", m.Props)
	}
}

func TestExternalDoorBoard(t *testing.T) {
	cfg := testConfig(t)
	cfg.SimDoors = 0
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("doors", contract.DownMessage{MsgID: "d-1", Op: contract.OpUpsert, Door: &contract.Door{ID: 1, Size: "L"}})
	c.MustAck("reservations", reservation("m-1", "R1", 1, 1, "700001", "700002", "700003"))
	c.Code("700001", "r1")
	c.Await(contract.DoorCommandTopic(1), anyPayload)
	c.Publish(contract.DoorStateTopic(1), contract.DoorState{State: contract.DoorOpen, At: time.Now().UTC()})
	c.Display("r1", contract.ResultOpened)
	c.Publish(contract.DoorStateTopic(1), contract.DoorState{State: contract.DoorClosed, At: time.Now().UTC()})
	c.Event(contract.EventStored, "R1", 1)
}

func TestRestartCompletesADoorCycleThatWasOpen(t *testing.T) {
	cfg := testConfig(t)
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 3, "800001", "800002", "800003"))
	c.Code("800001", "r1")
	c.Display("r1", contract.ResultOpened)
	g.Stop(t) // SIGTERM in the middle of the delivery: the door is open

	cfg2 := cfg
	cfg2.MQTTAddr, cfg2.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	g2 := startGateway(t, cfg2)
	// The restarted simulator reports its doors closed: the courier has shut
	// the door meanwhile, and the delivery completes.
	deadline := time.After(waitLimit)
	for statusOf(t, g2, "R1") != contract.StatusStored {
		select {
		case <-g2.Store().OutboxNotify(): // a commit with an upstream message
		case <-deadline:
			t.Fatalf("status %q after restart; want stored", statusOf(t, g2, "R1"))
		}
	}
}

// TestResponseTopicCannotReachTheContractsTopics checks that a client cannot
// use the MQTT 5 response topic to make the gateway publish on a topic of the
// contract (which its ACL would not let it publish on itself).
func TestResponseTopicCannotReachTheContractsTopics(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#", "kiosk/after")
	for i, topic := range []string{"locky/down/reservations", "locky/doors/3/command", "locky/#"} {
		req := fmt.Sprintf("rt%d", i)
		c.PublishWith(&paho.Publish{Topic: contract.TopicScreenCode, QoS: 1,
			Payload:    []byte(`{"code":"000000","request_id":"` + req + `"}`),
			Properties: &paho.PublishProperties{ResponseTopic: topic, CorrelationData: []byte("x")}})
		c.Display(req, contract.ResultInvalidCode) // answered on the display topic as usual
	}
	// A last request with an allowed response topic: its answer comes after
	// any answer to the ones before (one goroutine publishes them in order).
	c.PublishWith(&paho.Publish{Topic: contract.TopicScreenCode, QoS: 1,
		Payload:    []byte(`{"code":"000000","request_id":"last"}`),
		Properties: &paho.PublishProperties{ResponseTopic: "kiosk/after"}})
	c.Await("kiosk/after", func(p []byte) bool { return strings.Contains(string(p), `"last"`) })
	for _, m := range c.Received() {
		if m.Topic != contract.TopicScreenDisplay && m.Topic != contract.TopicScreenCode &&
			strings.Contains(string(m.Payload), `"request_id":"rt`) {
			t.Errorf("the gateway published a response on %s: %s", m.Topic, m.Payload)
		}
	}
}
