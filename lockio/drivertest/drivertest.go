// Package drivertest is what the lock drivers' benchmarks share: a recorder
// of the states a driver reports, each with the time it came, and the
// figures of a run (nearest-rank quantiles, a poll-cycle histogram's p50,
// p99 and mean, the process's CPU time).
//
// Its place in the layering: test support beside the drivers (lockio); it
// imports only the contract.
package drivertest

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
)

// Watcher is a driver's way of reporting door states.
type Watcher interface {
	Watch(report func(door int, st contract.DoorState))
}

// Reports are the states a driver reported, read in order by Await.
type Reports struct {
	tb    testing.TB
	limit time.Duration
	ch    chan report
	state map[int]string // each door's last state read
}

type report struct {
	door int
	st   contract.DoorState
	at   time.Time
}

// Record registers a receiver of d's reports (call it before the driver
// starts). An Await that waits longer than limit fails the test.
func Record(tb testing.TB, d Watcher, limit time.Duration) *Reports {
	r := &Reports{tb: tb, limit: limit, ch: make(chan report, 4096), state: map[int]string{}}
	d.Watch(func(door int, st contract.DoorState) { r.ch <- report{door, st, time.Now()} })
	return r
}

// Await reads the reports until door reports want, and returns when the
// driver reported it.
func (r *Reports) Await(door int, want string) time.Time {
	r.tb.Helper()
	deadline := time.After(r.limit)
	for {
		select {
		case e := <-r.ch:
			r.state[e.door] = e.st.State
			if e.door == door && e.st.State == want {
				return e.at
			}
		case <-deadline:
			r.tb.Fatalf("door %d: not %s within %s (last %q)", door, want, r.limit, r.state[door])
		}
	}
}

// Settle returns once the last state read of each door is want, awaiting
// those whose last state is another.
func (r *Reports) Settle(want string, doors ...int) {
	r.tb.Helper()
	for _, d := range doors {
		for r.state[d] != want {
			r.Await(d, want)
		}
	}
}

// Quantile returns the q quantile of ds (nearest rank).
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ReportQuantiles reports the p50 and p99 of ds, in ms, as name-p50-ms and
// name-p99-ms.
func ReportQuantiles(b *testing.B, name string, ds []time.Duration) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(Quantile(ds, 0.5)), name+"-p50-ms")
	b.ReportMetric(ms(Quantile(ds, 0.99)), name+"-p99-ms")
}

// Values returns the set's samples by name, labels included, as
// GET /metrics would show them.
func Values(set *metrics.Set) map[string]float64 {
	var text bytes.Buffer
	set.WritePrometheus(&text)
	values := map[string]float64{}
	sc := bufio.NewScanner(&text)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if v, err := strconv.ParseFloat(val, 64); ok && err == nil {
			values[name] = v
		}
	}
	return values
}

// Histogram returns the p50 and p99 of the histogram family{bus="bus"} of
// set (the upper bounds of the vmrange buckets they fall in) and its mean,
// from its _sum and _count, in seconds. It fails the test when the
// histogram counted nothing.
func Histogram(tb testing.TB, set *metrics.Set, family, bus string) (p50, p99, mean float64) {
	tb.Helper()
	h := set.GetOrCreateHistogram(fmt.Sprintf(`%s{bus=%q}`, family, bus))
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
			tb.Fatalf("vmrange %q: %v", vmrange, err)
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
	values := Values(set)
	sum := values[fmt.Sprintf(`%s_sum{bus=%q}`, family, bus)]
	count := values[fmt.Sprintf(`%s_count{bus=%q}`, family, bus)]
	if count == 0 {
		tb.Fatalf("no %s counted on %s", family, bus)
	}
	return at(0.5), at(0.99), sum / count
}

// CPUTime is the user and system CPU time of the process so far.
func CPUTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// IdleCPU reports the process's CPU time per wall second over idle, as
// idle-cpu-s/s: what a driver costs while it only polls.
func IdleCPU(b *testing.B, idle time.Duration) {
	cpu0, wall0 := CPUTime(b), time.Now()
	time.Sleep(idle)
	b.ReportMetric((CPUTime(b)-cpu0).Seconds()/time.Since(wall0).Seconds(), "idle-cpu-s/s")
}
