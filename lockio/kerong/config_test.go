package kerong

import (
	"errors"
	"strings"
	"testing"
)

func TestNewValidates(t *testing.T) {
	f := func(doors map[int]Door, buses map[string]Bus, want string) {
		t.Helper()
		_, err := New(Config{Doors: doors, Buses: buses})
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v; want an ErrConfig containing %q", err, want)
		}
	}
	const bus = "/dev/ttyUSB0"
	f(nil, nil, "no doors")
	f(map[int]Door{0: {Bus: bus, Lock: 1}}, nil, "door 0:")
	f(map[int]Door{3: {Lock: 1}}, nil, "door 3: no bus")
	f(map[int]Door{4: {Bus: bus, Board: 32, Lock: 1}}, nil, "door 4: board address 32")
	f(map[int]Door{5: {Bus: bus, Board: -1, Lock: 1}}, nil, "door 5: board address -1")
	f(map[int]Door{6: {Bus: bus, Lock: 0}}, nil, "door 6: lock channel 0")
	f(map[int]Door{7: {Bus: bus, Lock: 9, Channels: 8}}, nil, "door 7: lock channel 9")
	f(map[int]Door{8: {Bus: bus, Lock: 1, Channels: 50}}, nil, "door 8: 50 channels")
	f(map[int]Door{1: {Bus: bus, Lock: 2}, 9: {Bus: bus, Lock: 2}}, nil, "door 9: lock 2 of board 0")
	f(map[int]Door{1: {Bus: bus, Lock: 1, Channels: 8}, 2: {Bus: bus, Lock: 2, Channels: 16}}, nil, "door 2: board 0 on /dev/ttyUSB0 given 16 channels, door 1 says 8")
	// One door giving the board's channels gives them for its other doors,
	// whichever is listed first.
	f(map[int]Door{1: {Bus: bus, Lock: 20}, 2: {Bus: bus, Lock: 2, Channels: 16}}, nil, "door 1: lock channel 20; use 1..16 on a 16-channel board (door 2 gives board 0 16 channels)")
	f(map[int]Door{1: {Bus: bus, Lock: 2, Channels: 16}, 2: {Bus: bus, Lock: 20}}, nil, "door 2: lock channel 20; use 1..16 on a 16-channel board (door 1 gives")
	f(map[int]Door{1: {Bus: bus, Lock: 30}}, nil, "door 1: lock channel 30; use 1..24 on a 24-channel board (the default")
	f(map[int]Door{1: {Bus: bus, Lock: 1}}, map[string]Bus{bus: {Parity: "mark"}}, "parity")
	f(map[int]Door{1: {Bus: bus, Lock: 1}}, map[string]Bus{bus: {StopBits: 3}}, "3 stop bits")
	f(map[int]Door{1: {Bus: bus, Lock: 1}}, map[string]Bus{bus: {Baud: -1}}, "baud")
}

func TestNewAccepts(t *testing.T) {
	_, err := New(Config{Doors: map[int]Door{
		1: {Bus: "/dev/ttyUSB0", Board: 0, Lock: 1},
		2: {Bus: "/dev/ttyUSB0", Board: 0, Lock: 2},
		3: {Bus: "/dev/ttyUSB0", Board: 31, Lock: 48, Channels: 48},
		4: {Bus: "/dev/ttyUSB1", Board: 0, Lock: 1, OpenWhenSet: true},
		5: {Bus: "/dev/ttyUSB1", Board: 1, Lock: 40}, // door 6 gives board 1 its 48 channels
		6: {Bus: "/dev/ttyUSB1", Board: 1, Lock: 1, Channels: 48},
	}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
}
