package modbus

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

const (
	open   = contract.DoorOpen
	closed = contract.DoorClosed
	fault  = contract.DoorFault
)

func TestOpenPulsesAndSensorReports(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	b, events := startBank(t,
		Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0},
		Door{Door: 2, Device: bus.Device, Unit: 1, Coil: 1, Input: 1},
	)
	await(t, events, 1, closed, "")

	if err := b.Open(1); err != nil {
		t.Fatal(err)
	}
	bus.AwaitCoil("coil 1 0 1")
	bus.AwaitCoil("coil 1 0 0")
	// The pulse alone is not an opening: the sensor flips, as the door does.
	bus.Do("set 1 0 1")
	await(t, events, 1, open, "sensor")
	bus.Do("set 1 0 0")
	await(t, events, 1, closed, "sensor")

	if err := b.Open(7); !errors.Is(err, ErrUnknownDoor) {
		t.Fatalf("Open(7): got %v; want %v", err, ErrUnknownDoor)
	}
}

func TestDoorAlreadyOpen(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	bus.Do("set 1 2 1")
	_, events := startBank(t,
		Door{Door: 3, Device: bus.Device, Unit: 1, Coil: 2, Input: 2},
		Door{Door: 4, Device: bus.Device, Unit: 1, Coil: 3, Input: 3, Polarity: OpenWhen0},
		Door{Door: 5, Device: bus.Device, Unit: 1, Coil: 4, Input: 4},
	)
	await(t, events, 3, open, "sensor")
	await(t, events, 4, open, "sensor")
	await(t, events, 5, closed, "sensor")
}

func TestBoardNotAnswering(t *testing.T) {
	bus := modbustest.StartBus(t, "1,2")
	b, events := startBank(t,
		Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0},
		Door{Door: 2, Device: bus.Device, Unit: 2, Coil: 0, Input: 0},
	)
	await(t, events, 1, closed, "")
	await(t, events, 2, closed, "")

	bus.Do("mute 1")
	await(t, events, 1, fault, "timeout")
	label := `{bus="` + bus.Device + `"}`
	if got := metric(t, b, "locky_modbus_boards_unreachable"+label); got != 1 {
		t.Errorf("boards unreachable: got %v; want 1", got)
	}
	if got := metric(t, b, `locky_modbus_errors_total{bus="`+bus.Device+`",kind="timeout"}`); got < 1 {
		t.Errorf("timeouts: got %v; want at least 1", got)
	}
	// The other board on the bus still works while unit 1 is retried.
	if err := b.Open(2); err != nil {
		t.Fatal(err)
	}
	bus.AwaitCoil("coil 2 0 1")
	bus.AwaitCoil("coil 2 0 0")
	bus.Do("set 2 0 1")
	await(t, events, 2, open, "sensor")

	bus.Do("set 1 0 1")
	bus.Do("unmute 1")
	// Once per episode: the next report after the fault is the real state.
	await(t, events, 1, open, "sensor")
	if got := metric(t, b, "locky_modbus_boards_unreachable"+label); got != 0 {
		t.Errorf("boards unreachable after recovery: got %v; want 0", got)
	}
	if got := metric(t, b, `locky_modbus_frames_sent_total{bus="`+bus.Device+`",kind="poll"}`); got < 1 {
		t.Errorf("frames sent: got %v; want at least 1", got)
	}
	if got := metric(t, b, "locky_modbus_response_latency_seconds_count"+label); got < 1 {
		t.Errorf("responses timed: got %v; want at least 1", got)
	}
	if got := metric(t, b, "locky_modbus_poll_cycle_seconds_count"+label); got < 1 {
		t.Errorf("poll cycles timed: got %v; want at least 1", got)
	}
}

// metric returns the value of a metric of b's set, failing the test when
// it is not there.
func metric(t *testing.T, b *Bank, name string) float64 {
	t.Helper()
	var buf strings.Builder
	b.cfg.Metrics.WritePrometheus(&buf)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("%s: not in the metrics:\n%s", name, buf.String())
	return 0
}

func TestModbusException(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	// The board has inputs 0..7: reading up to 20 is an illegal data address.
	_, events := startBank(t,
		Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0},
		Door{Door: 2, Device: bus.Device, Unit: 1, Coil: 1, Input: 20},
	)
	st := await(t, events, 1, fault, "exception 2 (illegal data address)")
	if st.At.IsZero() {
		t.Errorf("fault without a time: %+v", st)
	}
	await(t, events, 2, fault, "exception 2")
}

func TestAdapterUnplugged(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	b, events := startBank(t, Door{Door: 9, Device: bus.Device, Unit: 1, Coil: 0, Input: 0})
	await(t, events, 9, closed, "")

	bus.Unplug()
	await(t, events, 9, fault, "adapter")
	if err := b.Open(9); err != nil { // queued; sent or dropped, never a hang
		t.Fatal(err)
	}
	bus.Plug()
	await(t, events, 9, closed, "sensor")
}

func TestTwoUnitsOneBus(t *testing.T) {
	bus := modbustest.StartBus(t, "1,2")
	b, events := startBank(t,
		Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0},
		Door{Door: 2, Device: bus.Device, Unit: 2, Coil: 0, Input: 0},
		Door{Door: 3, Device: bus.Device, Unit: 2, Coil: 5, Input: 5},
	)
	for _, d := range []int{1, 2, 3} {
		await(t, events, d, closed, "")
	}
	if err := b.Open(3); err != nil {
		t.Fatal(err)
	}
	bus.AwaitCoil("coil 2 5 1")
	bus.AwaitCoil("coil 2 5 0")
	bus.Do("set 2 5 1")
	await(t, events, 3, open, "sensor")
	bus.Do("set 1 0 1")
	await(t, events, 1, open, "sensor")
}

func TestNewValidates(t *testing.T) {
	f := func(want string, doors ...Door) {
		t.Helper()
		_, err := New(Config{Doors: doors})
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%+v): got %v; want an error containing %q", doors, err, want)
		}
	}
	ok := Door{Door: 1, Device: "/dev/ttyUSB0", Unit: 1}
	f("no doors")
	f("door 0: door numbers", Door{Device: "/dev/ttyUSB0", Unit: 1})
	f("door 10000: door numbers", Door{Door: 10000, Device: "/dev/ttyUSB0", Unit: 1})
	f("door 2: unit address 0", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Input: 1, Coil: 1})
	f("door 2: unit address 248", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 248, Input: 1, Coil: 1})
	f("door 2: no device", ok, Door{Door: 2, Unit: 1, Input: 1, Coil: 1})
	f("door 1: listed twice", ok, ok)
	f("door 2: coil 0 of unit 1 on /dev/ttyUSB0 is already door 1's", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Input: 1})
	f("door 2: input 0 of unit 1 on /dev/ttyUSB0 is already door 1's", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1})
	f("door 2: unknown sensor polarity", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1, Input: 1, Polarity: 7})
	f("span more than 2000", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1, Input: 2000})
	addr := func(a uint16) *uint16 { return &a }
	f("door 1: occupancy input 0 of unit 1 on /dev/ttyUSB0 is door 1's sensor input", Door{Door: 1, Device: "/dev/ttyUSB0", Unit: 1, Occupancy: addr(0)})
	f("door 1: occupancy input 1 of unit 1 on /dev/ttyUSB0 is door 2's sensor input",
		Door{Door: 1, Device: "/dev/ttyUSB0", Unit: 1, Occupancy: addr(1)}, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1, Input: 1})
	f("door 2: occupancy input 4 of unit 1 on /dev/ttyUSB0 is already door 1's",
		Door{Door: 1, Device: "/dev/ttyUSB0", Unit: 1, Occupancy: addr(4)}, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1, Input: 1, Occupancy: addr(4)})
	f("door 2: unknown occupancy polarity 7", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1, Input: 1, Occupancy: addr(4), OccupancyPolarity: 7})
	f("door 2: an occupancy polarity without an occupancy input", ok, Door{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1, Input: 1, OccupancyPolarity: OccupiedWhen0})
	f("inputs (sensor and occupancy) 0..2000 span more than 2000", Door{Door: 1, Device: "/dev/ttyUSB0", Unit: 1, Occupancy: addr(2000)})

	// The same coil and input on another unit or another bus are other doors.
	if _, err := New(Config{Doors: []Door{ok, {Door: 2, Device: "/dev/ttyUSB0", Unit: 2}, {Door: 3, Device: "/dev/ttyUSB1", Unit: 1}}}); err != nil {
		t.Errorf("New: got %v; want nil", err)
	}
	// An occupancy input may be another unit's sensor input.
	if _, err := New(Config{Doors: []Door{ok, {Door: 2, Device: "/dev/ttyUSB0", Unit: 2, Occupancy: addr(0), Input: 1}}}); err != nil {
		t.Errorf("New: got %v; want nil", err)
	}
}

// TestOccupancy: a door's occupancy input is read with its sensor and
// reported in each of its states, a change of occupancy alone included;
// a door without one reports no occupancy.
func TestOccupancy(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	four, five := uint16(4), uint16(5)
	_, events := startBank(t,
		Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0, Occupancy: &four},
		Door{Door: 2, Device: bus.Device, Unit: 1, Coil: 1, Input: 1, Occupancy: &five, OccupancyPolarity: OccupiedWhen0},
		Door{Door: 3, Device: bus.Device, Unit: 1, Coil: 2, Input: 2},
	)
	yes, no := true, false
	// f waits for the next report of door and fails unless it is state with
	// occupied (nil: no occupancy said).
	f := func(door int, state string, occupied *bool) {
		t.Helper()
		st := next(t, events, door)
		if st.State != state || !sameOccupancy(st.Occupied, occupied) {
			t.Fatalf("door %d: got %s occupied=%s; want %s occupied=%s", door, st.State, show(st.Occupied), state, show(occupied))
		}
	}
	// Every input reads 0: door 1 is empty, door 2 (occupied when 0) is not.
	f(1, closed, &no)
	f(2, closed, &yes)
	f(3, closed, nil)

	bus.Do("set 1 4 1") // a parcel in door 1, which stays closed
	f(1, closed, &yes)
	bus.Do("set 1 0 1")
	f(1, open, &yes)
	bus.Do("set 1 4 0") // taken out
	f(1, open, &no)
	bus.Do("set 1 0 0")
	f(1, closed, &no)

	bus.Do("set 1 5 1")
	f(2, closed, &no)
	bus.Do("set 1 2 1")
	f(3, open, nil)

	// A board that does not answer says nothing of occupancy; once it
	// answers, the states carry it again.
	bus.Do("mute 1")
	f(1, fault, nil)
	bus.Do("set 1 4 1")
	bus.Do("unmute 1")
	f(1, closed, &yes)
}

// next returns the next report of door, skipping the other doors'.
func next(t *testing.T, events chan event, door int) contract.DoorState {
	t.Helper()
	timeout := time.After(guard)
	for {
		select {
		case e := <-events:
			if e.door == door {
				return e.st
			}
		case <-timeout:
			t.Fatalf("door %d reported nothing", door)
		}
	}
}

func show(occupied *bool) string {
	if occupied == nil {
		return "nil"
	}
	return strconv.FormatBool(*occupied)
}

func TestOpenBeforeStart(t *testing.T) {
	b, err := New(Config{Doors: []Door{{Door: 1, Device: "/dev/null-does-not-exist", Unit: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Open(1); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Open before Start: got %v; want %v", err, ErrNotStarted)
	}
	for range 2 {
		if err := b.Close(); err != nil {
			t.Errorf("Close: got %v; want nil", err)
		}
	}
	if err := b.Open(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: got %v; want %v", err, ErrClosed)
	}
	if err := b.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: got %v; want %v", err, ErrClosed)
	}
}

func TestCRC16(t *testing.T) {
	f := func(frame []byte, want uint16) {
		t.Helper()
		if got := crc16(frame); got != want {
			t.Errorf("crc16(% x): got %#04x; want %#04x", frame, got, want)
		}
	}
	// Responses captured from pymodbus (CRC sent low byte first).
	f([]byte{0x01, 0x02, 0x01, 0x00}, 0x88a1)
	f([]byte{0x01, 0x05, 0x00, 0x03, 0xff, 0x00}, 0x3a7c)
	f([]byte{0x01, 0x82, 0x02}, 0x61c1)
}

func TestFrameSilence(t *testing.T) {
	f := func(baud int, want time.Duration) {
		t.Helper()
		if got := frameSilence(baud); got != want {
			t.Errorf("frameSilence(%d): got %v; want %v", baud, got, want)
		}
	}
	f(9600, 4010416*time.Nanosecond) // 3.5 × 11 bits / 9600
	f(19200, 2005208*time.Nanosecond)
	f(38400, 1750*time.Microsecond)
	f(115200, 1750*time.Microsecond)
}
