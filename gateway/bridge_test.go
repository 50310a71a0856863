package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestCloudSeesEveryEventAcrossALinkCut runs a locker against a real
// Mosquitto through a proxy, cuts the link during a stream of deliveries, and
// checks that the back-end's subscriber gets every event once the link is
// back, in order, and that what the back-end sent during the cut is applied.
func TestCloudSeesEveryEventAcrossALinkCut(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	proxy := testenv.NewProxy(t, cloud.Addr)
	backend := connect(t, cloud.Addr, "lockers/+/up/#", "lockers/+/status")

	cfg := testConfig(t)
	cfg.LockerID = "locker-7"
	cfg.CloudURL = proxy.URL()
	g := startGateway(t, cfg)
	local := connect(t, g.MQTTAddr(), "locky/#")
	backend.Await("lockers/locker-7/status", func(p []byte) bool { return strings.Contains(string(p), `"online"`) })

	deliver := func(i int) {
		id, door := fmt.Sprintf("R%d", i), i%12+1
		local.MustAck("reservations", reservation(fmt.Sprintf("m-%d", i), id, 1, door,
			fmt.Sprintf("%06d", 100000+i), fmt.Sprintf("%06d", 200000+i), fmt.Sprintf("%06d", 300000+i)))
		local.Code(fmt.Sprintf("%06d", 100000+i), "d"+id)
		local.Display("d"+id, contract.ResultOpened)
		g.SimDoor(t, door, "close")
		local.Event(contract.EventStored, id, door)
	}
	for i := 0; i < 3; i++ {
		deliver(i)
	}
	proxy.Cut()
	for i := 3; i < 10; i++ {
		deliver(i) // the locker works on while offline
	}
	// The back-end sends a door while the locker is offline.
	backend.Publish("lockers/locker-7/down/doors", `{"msg_id":"cloud-d13","op":"upsert","door":{"id":13,"size":"L"}}`)
	proxy.Restore()

	backend.AwaitCount("lockers/locker-7/up/events", func(p []byte) bool {
		return strings.Contains(string(p), contract.EventStored)
	}, 10)
	backend.Await("lockers/locker-7/up/acks", func(p []byte) bool { return strings.Contains(string(p), `"cloud-d13","ok":true`) })
	if _, ok, err := g.Store().Door(13); err != nil || !ok {
		t.Fatalf("door 13 sent during the cut: ok=%v err=%v; want it stored", ok, err)
	}

	// Every stored event arrived, with increasing event ids.
	seen := map[string]bool{}
	last := ""
	for _, m := range backend.Received() {
		if m.Topic != "lockers/locker-7/up/events" {
			continue
		}
		var e contract.Event
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			t.Fatal(err)
		}
		if e.EventID < last {
			t.Errorf("event %s arrived after %s", e.EventID, last)
		}
		if e.EventID > last {
			last = e.EventID
		}
		if e.Type == contract.EventStored {
			seen[e.Reservation] = true
		}
	}
	for i := 0; i < 10; i++ {
		if !seen[fmt.Sprintf("R%d", i)] {
			t.Errorf("the cloud never got reservation.stored of R%d", i)
		}
	}
}

// TestCloudMessagesEnterThroughTheBroker: a message from the back-end reaches
// the locker's broker like every other message, so a local subscriber of
// locky/down/# sees it, and the back-end gets its ack once it is committed.
func TestCloudMessagesEnterThroughTheBroker(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	backend := connect(t, cloud.Addr, "lockers/+/up/#", "lockers/+/status")
	cfg := testConfig(t)
	cfg.LockerID = "locker-8"
	cfg.CloudURL = cloud.URL()
	g := startGateway(t, cfg)
	local := connect(t, g.MQTTAddr(), "locky/down/#")
	backend.Await("lockers/locker-8/status", func(p []byte) bool { return strings.Contains(string(p), `"online"`) })

	const door = `{"msg_id":"cloud-d14","op":"upsert","door":{"id":14,"size":"L"}}`
	backend.Publish("lockers/locker-8/down/doors", door)
	local.Await("locky/down/doors", func(p []byte) bool { return string(p) == door })
	backend.Await("lockers/locker-8/up/acks", func(p []byte) bool { return strings.Contains(string(p), `"cloud-d14","ok":true`) })
	if _, ok, err := g.Store().Door(14); err != nil || !ok {
		t.Fatalf("door 14 from the cloud: ok=%v err=%v; want it stored", ok, err)
	}
}
