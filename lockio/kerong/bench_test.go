package kerong_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/drivertest"
	"github.com/locky-edge/locky/lockio/kerong"
	"github.com/locky-edge/locky/lockio/kerong/kerongtest"
)

// BenchmarkOpen measures the driver between the gateway's Open and the lock
// boards, over a real pty pair made by socat with kerongtest's emulator at
// the far end, the gateway's default timings (poll every 200 ms, 300 ms
// response timeout), at 9600 and 115200 baud with 12 doors (one board of
// 12) and 48 doors (two boards of 24) polled:
//
//   - pulse: Open → the emulator has served the unlock frame (its
//     AwaitUnlock returns; the emulator has no timestamp hook, so the
//     figure includes waking the benchmark's goroutine);
//   - open: Open → the driver reports the door open, the emulator opening
//     the door at once (SetManualDoors false);
//   - cycle: the driver's locky_kerong_poll_cycle_seconds (p50 and p99 are
//     upper bounds of its vmrange buckets, about 14% wide; mean from _sum
//     and _count);
//   - idle-cpu: the CPU time (user + system, getrusage) of the process per
//     wall second while the bank polls for a fixed period with no opening.
//     The emulator runs in the same process, so this is an upper bound for
//     the driver; socat is another process and not in it.
//
// Each Open comes at a random point of the poll interval, so that the
// figures sample every phase of the bus loop.
//
// A pty has no baud rate: the bytes pass at memory speed whatever the line
// setting. So the 9600 and 115200 figures measure the driver's own timing
// logic (queueing behind a poll, timers, scheduling), not the wire; this
// driver has no baud-dependent delay, so the two should match. The wire time
// is computed beside them (bytes × 10 bits / baud, 8N1, no board
// turnaround): wire-pulse-max is the worst wait of an unlock on a real line
// (the poll exchange under way when it comes, then its own request),
// wire-cycle one poll of every board. On a real bus, code → pulse is about
// pulse + up to wire-pulse-max + the boards' turnaround. The target:
// code → pulse p99 under 50 ms at 9600 baud with 48 doors polled.
//
// Run: go test -run '^$' -bench Open -benchtime 200x ./lockio/kerong/
// (b.Loop: one setup per case, exactly 200 openings). ns/op is the time of
// one iteration, random phase delay included: not a result.
func BenchmarkOpen(b *testing.B) {
	for _, baud := range []int{9600, 115200} {
		for _, layout := range []struct{ boards, channels int }{{1, 12}, {2, 24}} {
			name := fmt.Sprintf("baud=%d/doors=%d", baud, layout.boards*layout.channels)
			b.Run(name, func(b *testing.B) { benchOpen(b, baud, layout.boards, layout.channels) })
		}
	}
}

const (
	benchPoll     = 200 * time.Millisecond // kerong's default PollInterval, the gateway's too
	benchIdleTime = 5 * time.Second        // the idle CPU measure
)

func benchOpen(b *testing.B, baud, boards, channels int) {
	socat := kerongtest.StartSocat(b, b.TempDir())
	emuBoards := map[byte]int{}
	doors := map[int]kerong.Door{}
	type lock struct {
		board byte
		ch    int
	}
	locks := map[int]lock{}
	for bd := range boards {
		emuBoards[byte(bd)] = channels
		for ch := 1; ch <= channels; ch++ {
			n := bd*channels + ch
			doors[n] = kerong.Door{Bus: socat.A, Board: bd, Lock: ch, Channels: channels}
			locks[n] = lock{byte(bd), ch}
		}
	}
	emu := kerongtest.NewEmulator(b, emuBoards)
	emu.SetManualDoors(false) // the door opens with its lock
	emu.Attach(socat.B)
	b.Cleanup(emu.Detach)

	set := metrics.NewSet()
	bank, err := kerong.New(kerong.Config{
		Doors:        doors,
		Buses:        map[string]kerong.Bus{socat.A: {Baud: baud}},
		PollInterval: benchPoll,
		Metrics:      set,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	reports := drivertest.Record(b, bank, kerongtest.WaitLimit)
	if err := bank.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := bank.Close(); err != nil {
			b.Error(err)
		}
	})

	all := slices.Collect(maps.Keys(doors))
	reports.Settle(contract.DoorClosed, all...)

	set.GetOrCreateHistogram(fmt.Sprintf(`locky_kerong_poll_cycle_seconds{bus=%q}`, socat.A)).Reset()
	var pulse, open []time.Duration
	n := 0
	for b.Loop() {
		// Round robin over every door: each is shut behind its opening
		// and read shut again by the time its turn comes back.
		n = n%len(doors) + 1
		reports.Settle(contract.DoorClosed, n)
		time.Sleep(rand.N(benchPoll)) // a random phase of the poll interval
		start := time.Now()
		if err := bank.Open(n); err != nil {
			b.Fatalf("Open(%d): %v", n, err)
		}
		emu.AwaitUnlock(b, locks[n].board, locks[n].ch)
		pulse = append(pulse, time.Since(start))
		open = append(open, reports.Await(n, contract.DoorOpen).Sub(start))
		emu.SetOpen(locks[n].board, locks[n].ch, false)
	}

	drivertest.ReportQuantiles(b, "pulse", pulse)
	drivertest.ReportQuantiles(b, "open", open)
	p50, p99, mean := drivertest.Histogram(b, set, "locky_kerong_poll_cycle_seconds", socat.A)
	b.ReportMetric(p50*1e3, "cycle-p50-ms")
	b.ReportMetric(p99*1e3, "cycle-p99-ms")
	b.ReportMetric(mean*1e3, "cycle-mean-ms")

	// The wire, 8N1: 10 bits a byte. A read-all reply is 4 bytes and a
	// status byte per 8 channels; unlock request and reply 5 bytes each.
	byteTime := 10 / float64(baud) * 1e3 // ms
	query := 5 + 4 + (channels+7)/8
	b.ReportMetric(float64(query+5)*byteTime, "wire-pulse-max-ms")
	b.ReportMetric(float64(boards*query)*byteTime, "wire-cycle-ms")

	// Idle: every door shut and read so, no opening for benchIdleTime.
	reports.Settle(contract.DoorClosed, all...)
	drivertest.IdleCPU(b, benchIdleTime)
}
