package modbus_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

// The gateway's tests below drive door 13, wired to relay (coil) 0 and
// sensor input 0 of board unit 1; with an occupancy sensor, that is input 1.
const (
	door      = 13
	coilOn    = "coil 1 0 1"
	coilOff   = "coil 1 0 0"
	doorOpens = "set 1 0 1"
	doorShuts = "set 1 0 0"
	occupancy = "occupancy=1" // on the door line: occupied when input 1 reads 1
	parcelIn  = "set 1 1 1"
)

// startLocker starts a board and a real gateway that drives door 13 on it
// through the door map, and returns them with an MQTT client subscribed to
// everything. The door is in the store and reports closed. extra is added
// to the door's line ("" or occupancy).
func startLocker(t *testing.T, extra string) (*modbustest.Bus, *gatewaytest.Client) {
	t.Helper()
	bus := modbustest.StartBus(t, "1")
	doorMap := filepath.Join(t.TempDir(), "doors.map")
	content := fmt.Sprintf(`# door %d on a Modbus relay board served by pymodbus
bus %s baud=9600 timeout=2s
door %d modbus %s unit=1 coil=0 input=0 open-when=1 %s
poll-interval 50ms
pulse 100ms
`, door, bus.Device, door, bus.Device, extra)
	if err := os.WriteFile(doorMap, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gatewaytest.Config(t)
	cfg.SimDoors = 0
	cfg.DoorMap = doorMap
	cfg.DoorTimeout = 2 * time.Second
	g := gatewaytest.Start(t, cfg)
	c := gatewaytest.Connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("doors", contract.DownMessage{MsgID: "d-1", Op: contract.OpUpsert, Door: &contract.Door{ID: door, Size: "M"}})
	awaitDoorState(c, contract.DoorClosed, 1)
	return bus, c
}

// awaitDoorState waits until door 13 has reported state n times.
func awaitDoorState(c *gatewaytest.Client, state string, n int) {
	c.AwaitCount(contract.DoorStateTopic(door), func(p []byte) bool {
		var st contract.DoorState
		return json.Unmarshal(p, &st) == nil && st.State == state
	}, n)
}

// openAndClose plays a door cycle on the board after the code of requestID:
// the lock pulses, the door opens, the screen says so, inside (zero or more
// board commands: a parcel put in or taken out) happens, the door shuts.
func openAndClose(t *testing.T, bus *modbustest.Bus, c *gatewaytest.Client, requestID string, inside ...string) {
	t.Helper()
	bus.AwaitCoil(coilOn)
	bus.AwaitCoil(coilOff)
	bus.Do(doorOpens)
	if d := c.Display(requestID, contract.ResultOpened); d.Door != door {
		t.Fatalf("%s opened door %d; want %d", requestID, d.Door, door)
	}
	for _, cmd := range inside {
		bus.Do(cmd)
	}
	bus.Do(doorShuts)
}

func TestGatewayDepositThenPickup(t *testing.T) {
	bus, c := startLocker(t, "")
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, door, "130001", "130002", "130003"))

	c.Code("130001", "dep")
	openAndClose(t, bus, c, "dep")
	if ev := c.Event(contract.EventStored, "R1", door); ev.Status != contract.StatusStored {
		t.Fatalf("stored event %+v; want status %q", ev, contract.StatusStored)
	}

	c.Code("130002", "pick")
	openAndClose(t, bus, c, "pick")
	if ev := c.Event(contract.EventDelivered, "R1", door); ev.Status != contract.StatusDelivered {
		t.Fatalf("delivered event %+v; want status %q", ev, contract.StatusDelivered)
	}
}

// TestGatewayDoorThatDoesNotOpen: the lock pulses but the sensor never
// changes (a jammed door): the screen says door_fault and the code is not
// used up.
func TestGatewayDoorThatDoesNotOpen(t *testing.T) {
	bus, c := startLocker(t, "")
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, door, "130101", "130102", "130103"))

	c.Code("130101", "jammed")
	bus.AwaitCoil(coilOn)
	bus.AwaitCoil(coilOff)
	if d := c.Display("jammed", contract.ResultDoorFault); d.Door != door {
		t.Fatalf("fault for door %d; want %d", d.Door, door)
	}
	// The driver finds the jam before the controller's door timeout (the
	// gateway sets its jam timeout below it): one jam, one door.fault.
	if e := c.Event(contract.EventDoorFault, "R1", door); !strings.Contains(e.Reason, "jammed") {
		t.Errorf("door.fault reason %q; want the driver's jammed", e.Reason)
	}

	c.Code("130101", "again")
	openAndClose(t, bus, c, "again")
	c.Event(contract.EventStored, "R1", door)
	if n := c.Count(contract.TopicEvents, func(p []byte) bool { return strings.Contains(string(p), contract.EventDoorFault) }); n != 1 {
		t.Errorf("%d door.fault events for one jam; want 1", n)
	}
}

// TestGatewayBoardNotAnswering: a board that stops answering turns its door
// into fault, which reaches the back-end as one door.fault event; once it
// answers again the door is closed and opens for a code.
func TestGatewayBoardNotAnswering(t *testing.T) {
	bus, c := startLocker(t, "")
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, door, "130201", "130202", "130203"))

	bus.Do("mute 1")
	awaitDoorState(c, contract.DoorFault, 1)
	if ev := c.Event(contract.EventDoorFault, "", door); ev.Reason == "" {
		t.Fatalf("door.fault event %+v without a reason", ev)
	}

	bus.Do("unmute 1")
	awaitDoorState(c, contract.DoorClosed, 2)
	c.Code("130201", "dep")
	openAndClose(t, bus, c, "dep")
	c.Event(contract.EventStored, "R1", door)
	// The controller published the stored event after every event of the
	// episode: the fault was reported once, not at each retry.
	if n := c.Count(contract.TopicEvents, func(p []byte) bool {
		var e contract.Event
		return json.Unmarshal(p, &e) == nil && e.Type == contract.EventDoorFault
	}); n != 1 {
		t.Fatalf("%d door.fault events for one episode; want 1", n)
	}
}

// TestGatewayOccupancy: door 13 has an occupancy sensor. A deposit whose
// door closes empty stores nothing (door.empty_after_deposit; the deposit
// code still works), the courier's next try with the parcel in stores it;
// a pickup whose door closes with the parcel still in is delivered and
// said (door.occupied_after_pickup).
func TestGatewayOccupancy(t *testing.T) {
	bus, c := startLocker(t, occupancy)
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, door, "130301", "130302", "130303"))
	isEvent := func(typ string) func([]byte) bool {
		return func(p []byte) bool {
			var e contract.Event
			return json.Unmarshal(p, &e) == nil && e.Type == typ
		}
	}

	c.Code("130301", "empty")
	openAndClose(t, bus, c, "empty") // the courier forgot the parcel
	c.Event(contract.EventEmptyAfterDeposit, "R1", door)
	// Events go out in order: a stored event for that closing would be here.
	if n := c.Count(contract.TopicEvents, isEvent(contract.EventStored)); n != 0 {
		t.Fatalf("%d reservation.stored events after a deposit that left the door empty; want 0 (R1 stays arriving)", n)
	}

	c.Code("130301", "dep")
	openAndClose(t, bus, c, "dep", parcelIn)
	if ev := c.Event(contract.EventStored, "R1", door); ev.Status != contract.StatusStored {
		t.Fatalf("stored event %+v; want status %q", ev, contract.StatusStored)
	}

	c.Code("130302", "pick")
	openAndClose(t, bus, c, "pick") // the customer left the parcel in
	if ev := c.Event(contract.EventDelivered, "R1", door); ev.Status != contract.StatusDelivered {
		t.Fatalf("delivered event %+v; want status %q", ev, contract.StatusDelivered)
	}
	c.Event(contract.EventOccupiedAfterPickup, "R1", door)
	if n := c.Count(contract.TopicEvents, isEvent(contract.EventEmptyAfterDeposit)); n != 1 {
		t.Fatalf("%d door.empty_after_deposit events; want 1, for the first deposit only", n)
	}
}
