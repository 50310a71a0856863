package dashboards

import (
	"context"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/metricspush"
	"github.com/locky-edge/locky/gateway/metricspush/vmtest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/kerong"
	"github.com/locky-edge/locky/lockio/kerong/kerongtest"
	"github.com/locky-edge/locky/lockio/modbus"
	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

// The "Lock boards" row reads the drivers' metrics. The simulated locker of
// TestPanelsReturnData has no boards, so the real drivers run here, each on
// a socat pty pair with a board at the far end: Kerong against kerongtest's
// emulator, Modbus against pymodbus (modbustest). Each bus has a board that
// answers and one that does not, so that every panel has a series of each
// driver: latency and poll cycles from the first, errors and an unreachable
// board from the second. Their metrics are pushed through metricspush as the
// scraped locker's: the gateway serves no locky_kerong_* or locky_modbus_*
// series of its own in that test, so nothing is counted twice.

const (
	kerongLive, kerongDead = 0, 1 // board addresses; the emulator silences kerongDead
	modbusLive, modbusDead = 1, 2 // units; modbustest mutes modbusDead
)

type lockBoards struct {
	set      *metrics.Set
	emu      *kerongtest.Emulator
	mbus     *modbustest.Bus
	kb       *kerong.Bank
	mb       *modbus.Bank
	kerongOn string // the bus label of each driver: its device path
	modbusOn string
}

// startLockBoards starts both drivers on their buses, each with one board
// answering and one silent, and returns once both have polled.
func startLockBoards(t *testing.T) *lockBoards {
	t.Helper()
	l := &lockBoards{set: metrics.NewSet()}
	log := testenv.Logger(t)

	socat := kerongtest.StartSocat(t, t.TempDir())
	l.kerongOn = socat.A
	l.emu = kerongtest.NewEmulator(t, map[byte]int{kerongLive: 12, kerongDead: 12})
	l.emu.SetSilent(kerongDead, true)
	l.emu.Attach(socat.B)
	t.Cleanup(l.emu.Detach)
	kb, err := kerong.New(kerong.Config{
		Doors: map[int]kerong.Door{
			1: {Bus: socat.A, Board: kerongLive, Lock: 1, Channels: 12},
			2: {Bus: socat.A, Board: kerongDead, Lock: 1, Channels: 12},
		},
		// A generous response timeout: a loaded machine must not fault
		// the board that answers.
		Buses:        map[string]kerong.Bus{socat.A: {ResponseTimeout: time.Second}},
		PollInterval: 20 * time.Millisecond,
		MaxBackoff:   200 * time.Millisecond,
		Metrics:      l.set,
		Logger:       log,
	})
	if err != nil {
		t.Fatal(err)
	}
	l.kb = kb
	startBank(t, kb)

	l.mbus = modbustest.StartBus(t, "1,2")
	l.modbusOn = l.mbus.Device
	l.mbus.Do("mute 2")
	mb, err := modbus.New(modbus.Config{
		Doors: []modbus.Door{
			{Door: 3, Device: l.mbus.Device, Unit: modbusLive, Coil: 0, Input: 0},
			{Door: 4, Device: l.mbus.Device, Unit: modbusDead, Coil: 0, Input: 0},
		},
		Timeout:      time.Second, // the live board is python on a loaded machine
		PulseLength:  50 * time.Millisecond,
		PollInterval: 50 * time.Millisecond,
		RetryMin:     50 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		Metrics:      l.set,
		Logger:       log,
	})
	if err != nil {
		t.Fatal(err)
	}
	l.mb = mb
	startBank(t, mb)

	l.emu.AwaitReads(t, kerongLive, 2)
	return l
}

type bank interface {
	Watch(func(door int, st contract.DoorState))
	Start(ctx context.Context) error
	Close() error
}

func startBank(t *testing.T, b bank) {
	t.Helper()
	b.Watch(func(int, contract.DoorState) {})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing %v: %v", b, err)
		}
	})
}

// openDoors sends an unlock through each driver and waits until each board
// saw it and kept being polled: every counter and histogram of the row has
// moved since the previous push.
func (l *lockBoards) openDoors(t *testing.T) {
	t.Helper()
	if err := l.kb.Open(1); err != nil {
		t.Fatalf("kerong door 1: %v", err)
	}
	l.emu.AwaitUnlock(t, kerongLive, 1)
	if err := l.mb.Open(3); err != nil {
		t.Fatalf("modbus door 3: %v", err)
	}
	l.mbus.AwaitCoil("coil 1 0 1")
	l.mbus.AwaitCoil("coil 1 0 0")
	l.emu.AwaitReads(t, kerongLive, 3)
}

// push sends the drivers' metrics to VictoriaMetrics as the scraped
// locker's, three times with door openings between: a rate needs two
// samples, and a quantile a bucket that grew.
func (l *lockBoards) push(t *testing.T, importURL string) {
	t.Helper()
	p, err := metricspush.New(metricspush.Config{
		URL: importURL, LockerID: scrapedLocker, Logger: testenv.Logger(t),
		Write: l.set.WritePrometheus,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 3 {
		if i > 0 {
			l.openDoors(t)
		}
		if err := p.Push(context.Background()); err != nil {
			t.Fatalf("push of the lock boards' metrics: %v", err)
		}
	}
}

// lockBoardRow is the title of the Locker dashboard's row of the drivers.
const lockBoardRow = "Lock boards"

// checkPanels asks VictoriaMetrics every query of the row and requires a
// series of each driver's bus in each: a query that named one driver's
// metrics only, or a histogram query that did not fit the drivers' vmrange
// buckets, fails here. The unreachable boards must read 1 on each bus.
func (l *lockBoards) checkPanels(t *testing.T, vm *vmtest.VM, d dashboard) {
	t.Helper()
	// The row's panels: in it when collapsed, after it up to the next row
	// when open.
	var ps []panel
	found, in := false, false
	for _, p := range d.Panels {
		if p.Type == "row" {
			in = p.Title == lockBoardRow
			if in {
				found = true
				ps = append(ps, p.Panels...)
			}
			continue
		}
		if in {
			ps = append(ps, p)
		}
	}
	if !found {
		t.Fatalf("dashboard %q has no row %q", d.Title, lockBoardRow)
	}
	if len(ps) != 5 {
		t.Fatalf("row %q: %d panels; want 5 (unreachable, errors, frames, latency, poll cycle)", lockBoardRow, len(ps))
	}
	buses := []string{l.kerongOn, l.modbusOn}
	for _, p := range ps {
		for _, tg := range p.Targets {
			expr := expand(tg.Expr, scrapedLocker)
			got, err := vm.WaitFor(expr, waitLimit, func(s []vmtest.Sample) bool {
				seen := map[string]bool{}
				for _, x := range s {
					seen[x.Labels["bus"]] = true
				}
				return seen[buses[0]] && seen[buses[1]]
			})
			if err != nil {
				t.Errorf("panel %q %s: %v; want a series of bus %s (kerong) and of %s (modbus)\n%s", p.Title, tg.RefID, err, buses[0], buses[1], expr)
				continue
			}
			if p.Type != "stat" {
				continue
			}
			for _, x := range got {
				if x.Value != 1 {
					t.Errorf("panel %q: bus %s reads %v; want 1 (one silent board on each bus)", p.Title, x.Labels["bus"], x.Value)
				}
			}
		}
	}
}

func dashboardNamed(t *testing.T, ds []dashboard, title string) dashboard {
	t.Helper()
	for _, d := range ds {
		if d.Title == title {
			return d
		}
	}
	t.Fatalf("no dashboard titled %q", title)
	return dashboard{}
}
