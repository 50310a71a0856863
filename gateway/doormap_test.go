package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/store/storetest"
	"github.com/locky-edge/locky/lockio/modbus"
)

func writeDoorMap(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "doors.map")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDoorMapNamesEachMistake: every mistake of a door map is refused with
// its line and what to write instead; a good map gives each bank its doors.
func TestDoorMapNamesEachMistake(t *testing.T) {
	f := func(content, want string) {
		t.Helper()
		_, err := gateway.ReadDoorMap(writeDoorMap(t, content))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadDoorMap(%q): %v; want an error saying %q", content, err, want)
		}
	}
	f("", "no door line")
	f("doors 1 kerong /dev/ttyUSB0 board=0 lock=1", `:1: "doors": a line starts with bus, door`)
	f("door 0 kerong /dev/ttyUSB0 board=0 lock=1", `:1: door "0": a door number is 1..`)
	f("door 1 kerong /dev/ttyUSB0 lock=1", ":1: door 1: board= is required")
	f("door 1 kerong /dev/ttyUSB0 board=32 lock=1", "board=32: must be a number 0..31")
	f("door 1 kerong /dev/ttyUSB0 board=0 lock=1 colour=red", `"colour": the settings here are board, lock, channels, open-when-set`)
	f("door 1 relay /dev/ttyUSB0", `board kind "relay": use kerong or modbus`)
	f("door 1 kerong /dev/ttyUSB0 board=0 lock=1\ndoor 1 kerong /dev/ttyUSB0 board=0 lock=2", ":2: door 1 is mapped twice (line 1)")
	f("door 1 kerong /dev/ttyUSB0 board=0 lock=1\ndoor 2 modbus /dev/ttyUSB0 unit=1 coil=0 input=0", ":2: bus /dev/ttyUSB0 has kerong and modbus boards")
	f("door 1 kerong /dev/ttyUSB0 board=0 lock=1\ndoor 2 kerong /dev/ttyUSB0 board=0 lock=1", "lock")
	f("door 1 modbus /dev/ttyUSB1 unit=0 coil=0 input=0", "unit=0: must be a number 1..247")
	f("door 1 modbus /dev/ttyUSB1 unit=1 coil=0 input=0 open-when=2", "open-when=2: the sensor input level of an open door, 1 or 0")
	f("door 1 modbus /dev/ttyUSB1 unit=1 coil=0 input=0 occupancy=ir", "occupancy=ir: must be a number 0..65535")
	f("door 1 modbus /dev/ttyUSB1 unit=1 coil=0 input=0 occupancy=4 occupied-when=yes", "occupied-when=yes: the occupancy input level with a parcel in, 1 or 0")
	f("door 1 modbus /dev/ttyUSB1 unit=1 coil=0 input=0 occupied-when=0", "occupied-when=0 without occupancy=")
	f("door 1 modbus /dev/ttyUSB1 unit=1 coil=0 input=0 occupancy=0", "door 1: occupancy input 0 of unit 1 on /dev/ttyUSB1 is door 1's sensor input")
	f("bus /dev/ttyUSB0 baud=fast\ndoor 1 kerong /dev/ttyUSB0 board=0 lock=1", ":1: bus /dev/ttyUSB0: baud=fast: must be a number")
	f("bus /dev/ttyUSB0 parity=mark\ndoor 1 kerong /dev/ttyUSB0 board=0 lock=1", "parity=mark: use none, even or odd")
	f("bus /dev/ttyUSB9\ndoor 1 kerong /dev/ttyUSB0 board=0 lock=1", "bus /dev/ttyUSB9: no door is on it")
	f("poll-interval soon\ndoor 1 kerong /dev/ttyUSB0 board=0 lock=1", ":1: poll-interval soon: must be a positive duration")

	m, err := gateway.ReadDoorMap(writeDoorMap(t, `# cabinet A: one Kerong board; cabinet B: a Modbus relay board
bus /dev/ttyUSB0 baud=19200
door 1 kerong /dev/ttyUSB0 board=0 lock=1 channels=16
door 2 kerong /dev/ttyUSB0 board=0 lock=2 channels=16 open-when-set
door 13 modbus /dev/ttyUSB1 unit=1 coil=0 input=0
door 14 modbus /dev/ttyUSB1 unit=1 coil=1 input=1 open-when=0 occupancy=9 occupied-when=0
door 15 modbus /dev/ttyUSB1 unit=1 coil=2 input=2 occupancy=10
poll-interval 100ms
`))
	if err != nil {
		t.Fatalf("ReadDoorMap of a good map: %v", err)
	}
	if k := m.Kerong; len(k.Doors) != 2 || k.Doors[2].Lock != 2 || !k.Doors[2].OpenWhenSet || k.Buses["/dev/ttyUSB0"].Baud != 19200 || k.PollInterval.String() != "100ms" {
		t.Errorf("Kerong config %+v; want doors 1 and 2 on /dev/ttyUSB0 at 19200 baud, polled every 100ms", k)
	}
	if len(m.Modbus) != 1 || len(m.Modbus[0].Doors) != 3 || m.Modbus[0].Doors[1].Coil != 1 {
		t.Fatalf("Modbus configs %+v; want one bus with doors 13, 14 and 15", m.Modbus)
	}
	occupancy := func(d modbus.Door, want int, polarity modbus.OccupancyPolarity) {
		t.Helper()
		got := -1 // none
		if d.Occupancy != nil {
			got = int(*d.Occupancy)
		}
		if got != want || d.OccupancyPolarity != polarity {
			t.Errorf("door %d: got occupancy %d (-1: none), polarity %d; want %d, %d", d.Door, got, d.OccupancyPolarity, want, polarity)
		}
	}
	occupancy(m.Modbus[0].Doors[0], -1, modbus.OccupiedWhen1)
	occupancy(m.Modbus[0].Doors[1], 9, modbus.OccupiedWhen0)
	occupancy(m.Modbus[0].Doors[2], 10, modbus.OccupiedWhen1)
}

// TestDoorMapNeedsNoSimulatedDoors: real and simulated doors at once is a
// mistake said at once.
func TestDoorMapNeedsNoSimulatedDoors(t *testing.T) {
	cfg := gateway.Defaults()
	cfg.DoorMap = writeDoorMap(t, "door 1 kerong /dev/ttyUSB0 board=0 lock=1")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "set --sim-doors 0") {
		t.Errorf("Validate with --door-map and 12 simulated doors: %v; want it to say set --sim-doors 0", err)
	}
	cfg.SimDoors = 0
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with --door-map and --sim-doors 0: %v", err)
	}
}

func FuzzReadDoorMap(f *testing.F) {
	f.Add("bus /dev/ttyUSB0 baud=9600\ndoor 1 kerong /dev/ttyUSB0 board=0 lock=1\n")
	f.Add("door 13 modbus /dev/ttyUSB1 unit=1 coil=0 input=0 open-when=0\npulse 300ms\n")
	f.Add("door 13 modbus /dev/ttyUSB1 unit=1 coil=0 input=0 occupancy=4 occupied-when=0\n")
	f.Add("door 2 kerong /dev/x board=1 lock=48 channels=48 open-when-set=false\npoll-interval 1s")
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(t.TempDir(), "doors.map")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := gateway.ReadDoorMap(path) // never panics
		if err == nil && len(m.Kerong.Doors) == 0 && len(m.Modbus) == 0 {
			t.Errorf("ReadDoorMap(%q) accepted a map without doors", content)
		}
	})
}

// TestCheckConfigNamesUnmappedDoors: --check-config warns of each door of
// the locker's store that the door map does not name (its codes would end in
// door_fault), and stays quiet for a new locker.
func TestCheckConfigNamesUnmappedDoors(t *testing.T) {
	cfg := gateway.Defaults()
	cfg.DataDir, cfg.SimDoors = t.TempDir(), 0
	cfg.DoorMap = writeDoorMap(t, "door 1 kerong /dev/ttyUSB0 board=0 lock=1\ndoor 2 kerong /dev/ttyUSB0 board=0 lock=2")
	unmapped := func() []string {
		t.Helper()
		warnings, err := gateway.Check(cfg)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		var out []string
		for _, w := range warnings {
			if strings.Contains(w, "not in --door-map") {
				out = append(out, w)
			}
		}
		return out
	}
	if w := unmapped(); len(w) != 0 {
		t.Errorf("warnings for a new locker %q; want none", w)
	}
	s := storetest.Open(t, store.Config{Path: filepath.Join(cfg.DataDir, "locky.db"), CodeKey: make([]byte, 32)})
	for _, id := range []int{1, 2, 3} {
		if _, err := s.UpsertDoor(time.Now(), fmt.Sprintf("d-%d", id), contract.Door{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if w := unmapped(); len(w) != 1 || !strings.Contains(w[0], "door 3 of the locker is not in --door-map") {
		t.Errorf("warnings %q; want one, for door 3", w)
	}
}
