package kerong_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
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

type stateAt struct {
	door int
	st   contract.DoorState
	at   time.Time
}

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
	events := make(chan stateAt, 4096)
	bank.Watch(func(door int, st contract.DoorState) { events <- stateAt{door, st, time.Now()} })
	if err := bank.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := bank.Close(); err != nil {
			b.Error(err)
		}
	})

	state := map[int]string{}
	// await reads the reports until door is in state, and returns when the
	// driver reported it.
	await := func(door int, want string) time.Time {
		b.Helper()
		deadline := time.After(kerongtest.WaitLimit)
		for {
			select {
			case e := <-events:
				state[e.door] = e.st.State
				if e.door == door && e.st.State == want {
					return e.at
				}
			case <-deadline:
				b.Fatalf("door %d: not %s within %s (last %q)", door, want, kerongtest.WaitLimit, state[door])
			}
		}
	}
	for n := range doors {
		if state[n] != contract.DoorClosed {
			await(n, contract.DoorClosed)
		}
	}

	cycle := set.GetOrCreateHistogram(fmt.Sprintf(`locky_kerong_poll_cycle_seconds{bus=%q}`, socat.A))
	cycle.Reset()
	var pulse, open []time.Duration
	n := 0
	for b.Loop() {
		// Round robin over every door: each is shut behind its opening
		// and read shut again by the time its turn comes back.
		n = n%len(doors) + 1
		for state[n] != contract.DoorClosed {
			await(n, contract.DoorClosed)
		}
		time.Sleep(rand.N(benchPoll)) // a random phase of the poll interval
		start := time.Now()
		if err := bank.Open(n); err != nil {
			b.Fatalf("Open(%d): %v", n, err)
		}
		emu.AwaitUnlock(b, locks[n].board, locks[n].ch)
		pulse = append(pulse, time.Since(start))
		open = append(open, await(n, contract.DoorOpen).Sub(start))
		emu.SetOpen(locks[n].board, locks[n].ch, false)
	}

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(quantile(pulse, 0.5)), "pulse-p50-ms")
	b.ReportMetric(ms(quantile(pulse, 0.99)), "pulse-p99-ms")
	b.ReportMetric(ms(quantile(open, 0.5)), "open-p50-ms")
	b.ReportMetric(ms(quantile(open, 0.99)), "open-p99-ms")
	p50, p99, mean := histogramFigures(b, set, cycle, socat.A)
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
	for d := range doors {
		for state[d] != contract.DoorClosed {
			await(d, contract.DoorClosed)
		}
	}
	cpu0, wall0 := cpuTime(b), time.Now()
	time.Sleep(benchIdleTime)
	b.ReportMetric((cpuTime(b)-cpu0).Seconds()/time.Since(wall0).Seconds(), "idle-cpu-s/s")
}

// quantile returns the q quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// histogramFigures returns the p50 and p99 of h (the upper bounds of the
// vmrange buckets they fall in) and its mean, from _sum and _count in the
// set's text, in seconds.
func histogramFigures(b *testing.B, set *metrics.Set, h *metrics.Histogram, bus string) (p50, p99, mean float64) {
	b.Helper()
	type bucket struct {
		upper float64
		n     uint64
	}
	var bs []bucket
	var total uint64
	h.VisitNonZeroBuckets(func(vmrange string, n uint64) {
		_, hi, _ := strings.Cut(vmrange, "...")
		upper, err := strconv.ParseFloat(hi, 64)
		if err != nil {
			b.Fatalf("vmrange %q: %v", vmrange, err)
		}
		bs = append(bs, bucket{upper, n})
		total += n
	})
	slices.SortFunc(bs, func(x, y bucket) int { return cmp.Compare(x.upper, y.upper) })
	at := func(q float64) float64 {
		var seen uint64
		for _, x := range bs {
			seen += x.n
			if float64(seen) >= q*float64(total) {
				return x.upper
			}
		}
		return 0
	}
	var text bytes.Buffer
	set.WritePrometheus(&text)
	var sum, count float64
	sc := bufio.NewScanner(&text)
	for sc.Scan() {
		name, val, _ := strings.Cut(sc.Text(), " ")
		v, _ := strconv.ParseFloat(val, 64)
		switch name {
		case fmt.Sprintf(`locky_kerong_poll_cycle_seconds_sum{bus=%q}`, bus):
			sum = v
		case fmt.Sprintf(`locky_kerong_poll_cycle_seconds_count{bus=%q}`, bus):
			count = v
		}
	}
	if count == 0 {
		b.Fatalf("no poll cycle counted on %s", bus)
	}
	return at(0.5), at(0.99), sum / count
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
