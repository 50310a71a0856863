package modbus_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/modbus"
)

// A bank of two doors on one Waveshare relay board (unit 1) at 9600 8N1:
// relay 1 (coil 0) pulses door 1's lock, input 1 (0) reads its sensor.
func Example() {
	bank, err := modbus.New(modbus.Config{
		Doors: []modbus.Door{
			{Door: 1, Device: "/dev/ttyUSB0", Unit: 1, Coil: 0, Input: 0},
			{Door: 2, Device: "/dev/ttyUSB0", Unit: 1, Coil: 1, Input: 1, Polarity: modbus.OpenWhen0},
		},
		PulseLength: 300 * time.Millisecond,
	})
	if err != nil {
		slog.Error("bad door map", "err", err)
		return
	}
	bank.Watch(func(door int, st contract.DoorState) {
		slog.Info("door", "door", door, "state", st.State, "reason", st.Reason)
	})
	if err := bank.Start(context.Background()); err != nil {
		slog.Error("cannot start", "err", err)
		return
	}
	if err := bank.Open(1); err != nil {
		slog.Error("cannot open door 1", "err", err)
	}
	if err := bank.Close(); err != nil {
		slog.Error("cannot close", "err", err)
	}
}
