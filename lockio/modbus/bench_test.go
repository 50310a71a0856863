package modbus_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/drivertest"
	"github.com/locky-edge/locky/lockio/modbus"
	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

// BenchmarkOpen measures the driver between the gateway's Open and the
// relay/input boards, over a real pty pair made by socat with modbustest's
// board (pymodbus's RTU server, board.py) at the far end, the driver's
// defaults, which are the gateway's (poll every 200 ms, 300 ms response
// timeout, 500 ms pulse), at 9600 and 115200 baud with 12 and 48 doors
// polled. modbustest's board has 8 coils and 8 inputs a unit, as a
// Waveshare 8-channel board, so 12 doors are units 1 (8 doors) and 2 (4),
// and 48 doors six units of 8; door n is coil and input (n-1)%8 of unit
// (n-1)/8+1, each unit read in one request a poll cycle:
//
//   - pulse: Open → the board has taken the coil-on write (AwaitCoil
//     returns). board.py prints the coil line when pymodbus stores the
//     write, before it sends the reply, and the line reaches us through
//     the board's stdout pipe, so the figure includes that pipe and waking
//     the benchmark's goroutine;
//   - open: Open → the driver reports the door open, the benchmark setting
//     the door's input to 1 as soon as the coil line arrives (Bus.Do, which
//     waits for the board's acknowledgement). The driver learns it at the
//     next poll of the door's unit, so this is mostly the rest of the poll
//     interval: about uniform over 0–200 ms, not a delay of the driver;
//   - cycle: the driver's locky_modbus_poll_cycle_seconds, one read of
//     every unit of the bus (p50 and p99 are upper bounds of its vmrange
//     buckets, about 14% wide; mean from _sum and _count);
//   - idle-cpu: the CPU time (user + system, getrusage RUSAGE_SELF) of the
//     test process per wall second while the bank polls for a fixed period
//     with no opening: the driver's bus goroutine, the Go runtime and
//     modbustest's goroutines (blocked on the board's pipes). The board
//     (python3) and socat are other processes and not in it;
//   - bus-errors: every locky_modbus_errors_total of the bus over the run
//     (a board answering later than the 300 ms timeout on a loaded machine
//     is a timeout, its doors a fault until the next poll); it should be 0.
//
// Each Open comes at a random point of the poll interval, so that the
// figures sample every phase of the bus loop. A door's next opening waits
// for its coil-off (the 500 ms pulse), so that the coil lines come in the
// order AwaitCoil expects; a run is about 0.6 s an opening.
//
// A pty has no baud rate: the bytes pass at memory speed whatever the line
// setting. So the figures measure the driver's logic (queueing behind an
// exchange, timers, scheduling) and pymodbus's turnaround, not the wire.
// One baud-dependent delay is real on the pty: the driver keeps the t3.5
// silence before each request (4.0 ms at 9600, 1.75 ms at 115200), which
// shows in the cycle of several units. The wire time is computed beside
// them, with Modbus's 11-bit character (bytes × 11 bits / baud; 8N1 sends
// 10, so this bounds it from above) and t3.5 before each request, no board
// turnaround: wire-pulse-max is the worst wait of a coil-on on a real line
// (the longest exchange under way when it comes, a coil write, then t3.5
// and its own request), wire-cycle one poll of every unit. On a real bus,
// code → pulse is about pulse + up to wire-pulse-max + a board's turnaround.
//
// Run: go test -run '^$' -bench Open -benchtime 50x ./lockio/modbus/
// (b.Loop: one setup per case, exactly 50 openings; use Nx, as an opening
// takes 0.6 s). ns/op is the time of one iteration, random phase delay and
// the coil-off wait included: not a result.
func BenchmarkOpen(b *testing.B) {
	for _, baud := range []int{9600, 115200} {
		for _, doors := range []int{12, 48} {
			b.Run(fmt.Sprintf("baud=%d/doors=%d", baud, doors), func(b *testing.B) { benchOpen(b, baud, doors) })
		}
	}
}

const (
	benchPoll     = 200 * time.Millisecond // modbus's default PollInterval, the gateway's too
	benchIdleTime = 4 * time.Second        // the idle CPU measure
	benchPerUnit  = 8                      // modbustest's board: 8 coils, 8 inputs a unit
)

// benchDoor is a door's place on the board and its board lines.
type benchDoor struct {
	unit, addr       int
	coilOn, coilOff  string // AwaitCoil's lines
	setOpen, setShut string // Bus.Do's commands
}

func benchOpen(b *testing.B, baud, count int) {
	units := (count + benchPerUnit - 1) / benchPerUnit
	list := make([]string, units)
	for u := range units {
		list[u] = strconv.Itoa(u + 1)
	}
	bus := modbustest.StartBus(b, strings.Join(list, ","))
	var doors []modbus.Door
	places := map[int]benchDoor{}
	inputs := make([]int, units+1) // inputs read a poll, by unit
	for n := 1; n <= count; n++ {
		u, a := (n-1)/benchPerUnit+1, (n-1)%benchPerUnit
		doors = append(doors, modbus.Door{Door: n, Device: bus.Device, Unit: u, Coil: uint16(a), Input: uint16(a)})
		places[n] = benchDoor{
			unit: u, addr: a,
			coilOn:  fmt.Sprintf("coil %d %d 1", u, a),
			coilOff: fmt.Sprintf("coil %d %d 0", u, a),
			setOpen: fmt.Sprintf("set %d %d 1", u, a),
			setShut: fmt.Sprintf("set %d %d 0", u, a),
		}
		inputs[u]++
	}

	set := metrics.NewSet()
	bank, err := modbus.New(modbus.Config{
		Doors:        doors,
		Baud:         baud,
		PollInterval: benchPoll,
		Metrics:      set,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	reports := drivertest.Record(b, bank, modbustest.WaitLimit)
	if err := bank.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := bank.Close(); err != nil {
			b.Error(err)
		}
	})

	all := slices.Collect(maps.Keys(places))
	reports.Settle(contract.DoorClosed, all...)

	set.GetOrCreateHistogram(fmt.Sprintf(`locky_modbus_poll_cycle_seconds{bus=%q}`, bus.Device)).Reset()
	errors0 := busErrors(set, bus.Device)
	var pulse, open []time.Duration
	n := 0
	for b.Loop() {
		// Round robin over every door: each is shut behind its opening
		// and read shut again by the time its turn comes back.
		n = n%count + 1
		d := places[n]
		reports.Settle(contract.DoorClosed, n)
		time.Sleep(rand.N(benchPoll)) // a random phase of the poll interval
		start := time.Now()
		if err := bank.Open(n); err != nil {
			b.Fatalf("Open(%d): %v", n, err)
		}
		bus.AwaitCoil(d.coilOn)
		pulse = append(pulse, time.Since(start))
		bus.Do(d.setOpen) // the door opens with its lock
		open = append(open, reports.Await(n, contract.DoorOpen).Sub(start))
		bus.Do(d.setShut)
		bus.AwaitCoil(d.coilOff) // before the next coil-on, in order
	}

	drivertest.ReportQuantiles(b, "pulse", pulse)
	drivertest.ReportQuantiles(b, "open", open)
	p50, p99, mean := drivertest.Histogram(b, set, "locky_modbus_poll_cycle_seconds", bus.Device)
	b.ReportMetric(p50*1e3, "cycle-p50-ms")
	b.ReportMetric(p99*1e3, "cycle-p99-ms")
	b.ReportMetric(mean*1e3, "cycle-mean-ms")
	b.ReportMetric(busErrors(set, bus.Device)-errors0, "bus-errors")

	// The wire: 11 bits a character, t3.5 before each request. A request
	// is 8 bytes (unit, function, address, count or value, CRC); a coil
	// write's reply echoes it (8), a read of discrete inputs answers 5
	// bytes and one per 8 inputs.
	char := 11 / float64(baud) * 1e3 // ms
	silence := 3.5 * char            // t3.5, as the driver keeps it
	if baud > 19200 {
		silence = 1.75
	}
	coilExchange := silence + 16*char
	var wireCycle, longest float64
	for u := 1; u <= units; u++ {
		poll := silence + float64(8+5+(inputs[u]+7)/8)*char
		wireCycle += poll
		longest = max(longest, poll)
	}
	longest = max(longest, coilExchange)
	b.ReportMetric(longest+silence+8*char, "wire-pulse-max-ms")
	b.ReportMetric(wireCycle, "wire-cycle-ms")

	// Idle: every door shut and read so, no opening for benchIdleTime.
	reports.Settle(contract.DoorClosed, all...)
	drivertest.IdleCPU(b, benchIdleTime)
}

// busErrors is the sum of the bus's locky_modbus_errors_total, every kind.
func busErrors(set *metrics.Set, bus string) float64 {
	prefix := fmt.Sprintf(`locky_modbus_errors_total{bus=%q,`, bus)
	var sum float64
	for name, v := range drivertest.Values(set) {
		if strings.HasPrefix(name, prefix) {
			sum += v
		}
	}
	return sum
}
