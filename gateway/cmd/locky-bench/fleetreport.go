package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// fleetResult is what one fleet size measured.
type fleetResult struct {
	n     int
	limit string // why this size stopped short; "" when it ran through

	online     sample       // the bridges' start → each locker online
	restart    restartTimes // the restart with the fleet idle
	reonline   sample       // the restarted broker accepts → each locker online
	traffic    trafficResult
	restarted  trafficResult // the traffic with a restart in the middle
	midRestart restartTimes
	// midReonline is the reconnection of the restart in the middle.
	midReonline sample
	// afterRestart counts the events of that phase that first arrived
	// after the restart: how much of the traffic it cut.
	afterRestart int

	brokerIdle memory        // Mosquitto with the fleet online, idle
	brokerPeak int64         // KiB: the highest VmHWM of Mosquitto's processes
	brokerCPU  time.Duration // Mosquitto's CPU time over the whole run
	trafficCPU time.Duration // of which during the first traffic phase
	perLocker  benchMemory   // the bench's memory per locker

	bridgeErrors int    // warnings and errors the bridges logged
	lastError    string // the last of them
}

// trafficResult is one traffic phase.
type trafficResult struct {
	events           int
	appended, wall   time.Duration // start → the last append committed; → the last event at the consumer
	lost, duplicates int
	redelivered      int // duplicates with the DUP flag: the broker's resends, not a bridge's
}

func (t trafficResult) rate() float64 { return float64(t.events-t.lost) / t.wall.Seconds() }

// benchMemory is the bench's own memory, in bytes.
type benchMemory struct {
	goMem int64 // runtime.MemStats HeapInuse + StackInuse, after a GC
	rss   int64 // VmRSS
}

// readBenchMemory reads the bench's memory after a GC that returns what it
// freed to the system, so that the RSS left over from a previous fleet is not
// counted as the baseline of the next.
func readBenchMemory() (benchMemory, error) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m, err := readMemory(os.Getpid())
	return benchMemory{goMem: int64(ms.HeapInuse + ms.StackInuse), rss: m.rss * 1024}, err
}

func (m benchMemory) minus(o benchMemory) benchMemory {
	return benchMemory{m.goMem - o.goMem, m.rss - o.rss}
}

func (m benchMemory) per(n int) benchMemory {
	return benchMemory{m.goMem / int64(n), m.rss / int64(n)}
}

// errorLog is the fleet's slog handler: it counts the warnings and errors
// of the bridges and stores and keeps the last one.
type errorLog struct {
	mu    sync.Mutex
	count int
	last  string
}

func (e *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (e *errorLog) WithAttrs([]slog.Attr) slog.Handler           { return e }
func (e *errorLog) WithGroup(string) slog.Handler                { return e }

func (e *errorLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			msg += ": " + a.Value.String()
		}
		return true
	})
	e.add(msg)
	return nil
}

func (e *errorLog) add(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count++
	e.last = msg
}

func (e *errorLog) get() (int, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.count, e.last
}

// fleetReport is everything `locky-bench fleet` measured.
type fleetReport struct {
	cfg                         fleetConfig
	machine, loadStart, loadEnd string
	nofile                      uint64
	results                     []fleetResult
}

// fleetRow is a row of the fleet table: its label and its cell for a size.
type fleetRow struct {
	label string
	cell  func(r fleetResult) string
}

func fleetRows(k int) []fleetRow {
	return []fleetRow{
		{"first start, all bridges at once → every locker online: last; p50 / p99 per locker", onlineCell(func(r fleetResult) sample { return r.online })},
		{"cloud restart, fleet idle: SIGTERM → Mosquitto exited; → every link down", func(r fleetResult) string {
			return when(r.restart.exit > 0, secs(r.restart.exit)+"; "+secs(r.restart.down))
		}},
		{"… restarted Mosquitto: exec → accepting; accepting → back-end consumer back → lockers let through", func(r fleetResult) string {
			return when(r.restart.ready > 0, ms(r.restart.ready)+"; "+ms(r.restart.hold))
		}},
		{"… accepting → every locker online again (the bridges' back-off): last; p50 / p99 per locker", onlineCell(func(r fleetResult) sample { return r.reonline })},
		{fmt.Sprintf("%d events per locker appended at once, link up → all at the back-end: events/s (time; appends done at)", k), func(r fleetResult) string {
			t := r.traffic
			return when(t.wall > 0, fmt.Sprintf("%.0f /s (%d in %s; %s)", t.rate(), t.events, secs(t.wall), secs(t.appended)))
		}},
		{"… lost / duplicated", func(r fleetResult) string { return lossCell(r.traffic) }},
		{fmt.Sprintf("%d events per locker again, cloud restart half-way: lost / duplicated; arrived after the restart", k), func(r fleetResult) string {
			return when(r.restarted.wall > 0, lossCell(r.restarted)+fmt.Sprintf("; %d", r.afterRestart))
		}},
		{"… all at the back-end in; the restart's accepting → every locker online: last; p50 / p99", func(r fleetResult) string {
			return when(r.restarted.wall > 0, secs(r.restarted.wall)+"; "+onlineCell(func(r fleetResult) sample { return r.midReonline })(r))
		}},
		{"Mosquitto RSS, fleet online and idle; peak (VmHWM) over the run", func(r fleetResult) string {
			return when(r.brokerIdle.rss > 0, mb(r.brokerIdle.rss)+"; "+mb(r.brokerPeak))
		}},
		{"Mosquitto CPU: whole run (both processes); first traffic phase, per 1 000 events", func(r fleetResult) string {
			return when(r.brokerCPU > 0, fmt.Sprintf("%.2f s; %.3f s", r.brokerCPU.Seconds(), r.trafficCPU.Seconds()*1000/float64(max(r.traffic.events, 1))))
		}},
		{"bench process per locker (bridge, outbox store, proxy): Go heap + stacks; RSS", func(r fleetResult) string {
			m := r.perLocker
			return when(m.goMem != 0, fmt.Sprintf("%.0f KiB; %.0f KiB", float64(m.goMem)/1024, float64(m.rss)/1024))
		}},
		{"bridge warnings and errors logged (link down, failed connects; 4 per locker from the two restarts)", func(r fleetResult) string {
			return when(len(r.online) > 0 || r.bridgeErrors > 0, fmt.Sprint(r.bridgeErrors))
		}},
		{"limit hit", func(r fleetResult) string {
			return when(r.limit != "", "**"+strings.ReplaceAll(r.limit, "\n", " ")+"**")
		}},
	}
}

// when returns s, or a dash when the figure was not measured.
func when(ok bool, s string) string {
	if !ok {
		return "—"
	}
	return s
}

func onlineCell(of func(fleetResult) sample) func(fleetResult) string {
	return func(r fleetResult) string {
		s := of(r)
		return when(len(s) > 0, secs(s.max())+"; "+secs(s.pct(0.5))+" / "+secs(s.pct(0.99)))
	}
}

func lossCell(t trafficResult) string {
	if t.wall == 0 {
		return "—"
	}
	lost := fmt.Sprintf("%d lost", t.lost)
	if t.lost > 0 {
		lost = "**" + lost + "**"
	}
	return fmt.Sprintf("%s / %d duplicated (%d with DUP) of %d", lost, t.duplicates, t.redelivered, t.events)
}

func printFleetReport(w io.Writer, rep fleetReport) {
	fmt.Fprintf(w, "# locky-bench fleet: one cloud Mosquitto, a fleet of bridges\n\nMachine: %s\n\n", rep.machine)
	fmt.Fprintf(w, "Load average (1, 5, 15 min) at start: %s; at end: %s. RLIMIT_NOFILE: %d.\n\n", rep.loadStart, rep.loadEnd, rep.nofile)
	head := []string{"measure"}
	for _, r := range rep.results {
		head = append(head, fmt.Sprintf("%d lockers", r.n))
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	for _, row := range fleetRows(rep.cfg.events) {
		cells := []string{row.label}
		for _, r := range rep.results {
			cells = append(cells, row.cell(r))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	for _, r := range rep.results {
		if r.limit != "" && r.lastError != "" {
			fmt.Fprintf(w, "\n%d lockers: the bridges' last warning: %s\n", r.n, r.lastError)
		}
	}
	fmt.Fprint(w, fleetMethod)
}

const fleetMethod = `
How it was measured:
- Each size runs against a Mosquitto of its own, started by the bench on
  127.0.0.1 with docker/cloud-mosquitto's settings (persistence on, password
  file hashed by mosquitto_passwd -U, its ACL: pattern write lockers/%u/up/#,
  write lockers/%u/status, read lockers/%u/down/#), max_queued_messages 0 (no
  bound, so that a loss cannot be the queue's) and max_connections the fleet
  size + 16. The bench's RLIMIT_NOFILE, raised to its hard limit, is
  Mosquitto's too.
- Every locker is a real bridge (backend-bridge, its defaults: back-off from
  1 s doubling to 2 min, jittered, keep-alive 30 s, window 256) on an outbox
  store of its own (bbolt, one file each under the work dir), client id and
  user name = locker id (L0001…), a password of its own; all run in the
  bench process, sharing its 2 cores with Mosquitto.
- The back-end consumer is one paho.golang client connected to Mosquitto
  directly: client id fleet-backend, persistent session (clean start off
  from the first connection: Mosquitto 2.0.11 saves no session begun with
  clean start on), expiry 1 h, receive maximum 100 (as lockyctl watch),
  lockers/+/up/# with QoS 1. It counts each event by (locker, event_id), and
  the duplicates that carry the DUP flag: those the broker sent again, where
  a bridge's resend is a new PUBLISH without it.
- The lockers reach Mosquitto through a TCP proxy in the bench (4 KiB buffers
  per direction), so that a restart can be ordered: Mosquitto 2.0.11 queues
  nothing for a session that was connected when it stopped until that session
  reconnects, and the back-end consumer is such a session. At a restart the
  proxy stops listening, Mosquitto gets SIGTERM (and a TCP connection every
  20 ms until it acts on it) and writes its persistence file, starts again on
  the same port and directory; the consumer reconnects (its session must be
  present), and only then does the proxy listen again. Until then the lockers
  find the broker down, as a real fleet would, and retry with their own back-off:
  the "hold" is part of their downtime. A deployment must do the same (the
  consumer next to the broker, or lockers kept out until it is back), or the
  events sent meanwhile are acknowledged and lost.
- Online = the bridge's LinkUp (connected, subscribed, status published),
  polled every 5 ms.
- Traffic: every locker appends its events at once, one fsynced commit each
  (store.AppendEvent, as a door cycle's event), the lockers in parallel; the
  rate is the events received / (first append → last event's arrival), so on
  a slow disk the appends bound it (their end is given). The second phase
  restarts the cloud broker once the consumer has half of that phase's events.
  Lost = never at the consumer (after 5 s without a new one); duplicated = received
  more than once (the bridges resend what was not acknowledged).
- Mosquitto's memory: VmRSS and VmHWM of /proc/PID/status; CPU: utime + stime
  of /proc/PID/stat (the exited process's rusage). The bench's per-locker
  memory: (runtime.MemStats HeapInuse + StackInuse, and VmRSS, each after
  debug.FreeOSMemory) with the fleet online minus before its stores were
  opened, divided by the fleet size.
`
