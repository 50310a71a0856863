package modbus

import (
	"testing"
	"time"

	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

// TestJammedLock: the board accepts the pulse but the sensor never changes.
// The door turns fault "jammed" after the jam timeout, stays so while the
// reading is the same, and reports the sensor again once it changes.
func TestJammedLock(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	b, events := startBankWith(t, func(c *Config) { c.JamTimeout = 300 * time.Millisecond },
		Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0},
		Door{Door: 2, Device: bus.Device, Unit: 1, Coil: 1, Input: 1},
	)
	await(t, events, 1, closed, "")
	await(t, events, 2, closed, "")

	if err := b.Open(1); err != nil {
		t.Fatal(err)
	}
	bus.AwaitCoil("coil 1 0 1")
	bus.AwaitCoil("coil 1 0 0")
	await(t, events, 1, fault, "jammed: coil 0 of unit 1 was pulsed, the door sensor (input 0) did not change")

	// The other door of the board is read as before.
	bus.Do("set 1 1 1")
	await(t, events, 2, open, "sensor")
	// The lock frees itself (or the door is forced): the sensor is the truth.
	bus.Do("set 1 0 1")
	await(t, events, 1, open, "sensor")
}

// TestOneGarbledReplyIsRetried: one reply damaged by noise is retried on the
// next poll and no door turns fault; replies damaged again and again are a
// fault with the reason, and the board recovers when they stop.
func TestOneGarbledReplyIsRetried(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	b, events := startBank(t, Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0})
	await(t, events, 1, closed, "")
	crc := `locky_modbus_errors_total{bus="` + bus.Device + `",kind="crc"}`

	bus.Do("garble 1")
	waitMetric(t, b, crc, 1)
	// The next report of door 1 is its real state, not a fault.
	bus.Do("set 1 0 1")
	await(t, events, 1, open, "sensor")
	if got := metric(t, b, `locky_modbus_boards_unreachable{bus="`+bus.Device+`"}`); got != 0 {
		t.Errorf("boards unreachable after one damaged reply: got %v; want 0", got)
	}

	bus.Do("garble 1000000")
	await(t, events, 1, fault, "CRC")
	bus.Do("garble 0")
	await(t, events, 1, open, "sensor")
}

// TestCoilWriteRetried: a lock pulse whose confirmation is damaged is sent
// once more (writing a coil is idempotent); one that is never confirmed is
// still switched off after the pulse, since the board may have switched it
// on.
func TestCoilWriteRetried(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	b, events := startBank(t, Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0})
	await(t, events, 1, closed, "")

	bus.Do("garble 1 5") // function 5: write single coil
	if err := b.Open(1); err != nil {
		t.Fatal(err)
	}
	bus.AwaitCoil("coil 1 0 1") // damaged answer
	bus.AwaitCoil("coil 1 0 1") // the second try
	bus.AwaitCoil("coil 1 0 0")

	bus.Do("garble 2 5")
	if err := b.Open(1); err != nil {
		t.Fatal(err)
	}
	bus.AwaitCoil("coil 1 0 1")
	bus.AwaitCoil("coil 1 0 1")
	bus.AwaitCoil("coil 1 0 0") // never confirmed, switched off all the same
	bus.Do("set 1 0 1")
	await(t, events, 1, open, "sensor")
}

// waitMetric waits until the metric of b's set reaches at least want.
func waitMetric(t *testing.T, b *Bank, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for metric(t, b, name) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached %v", name, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAPulseNeverConfirmedFaultsNoDoor: with FaultAfter 1, a lock pulse whose
// answers are both damaged still faults no door: the board may have pulsed
// the lock, and a fault would make the controller end the cycle of a door
// that is opening. The sensor says it opened.
func TestAPulseNeverConfirmedFaultsNoDoor(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	b, events := startBankWith(t, func(c *Config) { c.FaultAfter = 1 }, Door{Door: 1, Device: bus.Device, Unit: 1, Coil: 0, Input: 0})
	await(t, events, 1, closed, "")
	bus.Do("garble 2 5")
	if err := b.Open(1); err != nil {
		t.Fatal(err)
	}
	bus.AwaitCoil("coil 1 0 1")
	bus.AwaitCoil("coil 1 0 1")
	bus.AwaitCoil("coil 1 0 0")
	bus.Do("set 1 0 1")
	await(t, events, 1, open, "sensor")
}
