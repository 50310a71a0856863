package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// sample is a set of measured durations.
type sample []time.Duration

// pct returns the p-th percentile (0 < p <= 1, nearest rank).
func (s sample) pct(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (s sample) max() time.Duration { return s.pct(1) }

func (s sample) mean() time.Duration {
	if len(s) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return sum / time.Duration(len(s))
}

// results is everything the bench measured.
type results struct {
	machine            string
	loadStart, loadEnd string // /proc/loadavg: other work on the machine skews the figures

	gwStart, gwStop, mqStart sample
	gwStartup                sample // the gateway's own config → ready
	gwStopLoaded             time.Duration

	gwIdle, gwLoaded, gwAfter, mqIdle, mqAfter memory

	firstCall  time.Duration // the first downstream message's upsert → ack after start
	dbSize     int64         // bytes of the database file when loaded; 0 if unknown
	upserts    sample
	upsertWall time.Duration
	cycles     cycleRun
	cycleWall  time.Duration
	wear       wear

	gwBroker, mqBroker brokerResult
	cloud              cloudResult
}

// wear is what the upserts and the door cycles wrote to the block layer
// (/proc/PID/io write_bytes), the figure behind an SD card's wear.
type wear struct {
	fs              string // the file system of the data dir: tmpfs counts 0
	upserts, cycles int64  // bytes written during all the upserts, all the door cycles

	// The same at the data dir's block device (MAJ:MIN), by every writer;
	// dev is "" when the data dir has none.
	dev                   string
	devUpserts, devCycles int64
}

func (w wear) deviceRow(upserts, cycles int) string {
	if w.dev == "" {
		return "n/a (no block device of its own)"
	}
	return perOp(w.devUpserts, upserts) + "; " + perOp(w.devCycles, cycles)
}

// perOp formats bytes per operation in KiB.
func perOp(total int64, n int) string {
	if n == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f KiB", float64(total)/float64(n)/1024)
}

// Reference design (SPEC §1), measured on its Pi, not here.
const (
	refFirstCall = "first call of a DB insert: faasd 1990 ms, Spring Boot 1682 ms"
	refMemory    = "faasd ~130 MB + ~25 MB per function"
	refAverage   = "DB insert, average: faasd 79 ms, Spring Boot 51 ms"
)

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.3f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1f ms", float64(d)/1e6)
}

// mb formats KiB as MB (10^6 bytes), the unit of SPEC §1 and §9.
func mb(kib int64) string { return fmt.Sprintf("%.1f MB", float64(kib)*1024/1e6) }

// secs formats a duration of seconds.
func secs(d time.Duration) string {
	if d < time.Second {
		return ms(d)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func rss(m memory) string {
	return fmt.Sprintf("%s (anon %s, file %s)", mb(m.rss), mb(m.anon), mb(m.file))
}

func dist(s sample) string {
	return fmt.Sprintf("%s / %s / %s (mean %s)", ms(s.pct(0.5)), ms(s.pct(0.99)), ms(s.max()), ms(s.mean()))
}

func perSecond(n int, d time.Duration) string {
	return fmt.Sprintf("%.0f /s", float64(n)/d.Seconds())
}

// target says whether a measured value meets its bar.
func target(bar string, met bool) string {
	if met {
		return bar + ": met"
	}
	return bar + ": **not met**"
}

func flood(r brokerRun) string {
	s := fmt.Sprintf("%.0f msg/s", r.rate())
	if r.received < r.sent {
		s += fmt.Sprintf(" (**%d of %d lost**)", r.sent-r.received, r.sent)
	}
	return s
}

func printReport(w io.Writer, cfg config, r *results) {
	rows := append(gatewayRows(cfg, r), cloudRows(cfg, r.cloud)...)
	fmt.Fprintf(w, "# locky-gateway end-to-end benchmark\n\nMachine: %s\n\n", r.machine)
	fmt.Fprintf(w, "Load average (1, 5, 15 min) at start: %s; at end: %s\n\n", r.loadStart, r.loadEnd)
	for i, row := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(row)))
		}
	}
	printMethod(w, cfg)
}

// gatewayRows are the table's head and the rows of the gateway and of the
// broker runs.
func gatewayRows(cfg config, r *results) [][]string {
	cyc := r.cycles
	return [][]string{
		{"measure", "locky-gateway", "Mosquitto (same run)", "reference design (SPEC §1)", "target (SPEC §9)"},
		{fmt.Sprintf("start-to-ready, p50 / max of %d runs", cfg.startRuns),
			ms(r.gwStart.pct(0.5)) + " / " + ms(r.gwStart.max()), ms(r.mqStart.pct(0.5)) + " / " + ms(r.mqStart.max()),
			"", target("< 200 ms", r.gwStart.max() < 200*time.Millisecond)},
		{"… of which config → ready (the gateway's own startup log field), p50 / max",
			ms(r.gwStartup.pct(0.5)) + " / " + ms(r.gwStartup.max()), "", "", ""},
		{"SIGTERM → exit, p50 / max (idle)", ms(r.gwStop.pct(0.5)) + " / " + ms(r.gwStop.max()),
			"not measured (see below)", "", target("< 5 s", r.gwStop.max() < 5*time.Second)},
		{"SIGTERM → exit (loaded)", ms(r.gwStopLoaded), "", "", target("< 5 s", r.gwStopLoaded < 5*time.Second)},
		{"RSS idle", rss(r.gwIdle), rss(r.mqIdle), refMemory, ""},
		{fmt.Sprintf("RSS loaded: %d reservations, %d door cycles", cfg.reservations, cfg.cycles), rss(r.gwLoaded), "",
			refMemory, target("< 30 MB", r.gwLoaded.rss*1024 < 30e6)},
		{"… database file (locky.db) when loaded", mb(r.dbSize / 1024), "", "", ""},
		{"RSS after the broker runs; peak (VmHWM) of the process", mb(r.gwAfter.rss) + "; peak " + mb(r.gwAfter.peak),
			mb(r.mqAfter.rss) + "; peak " + mb(r.mqAfter.peak), "", ""},
		{"first call: the first downstream message after start (a door upsert → ack)", ms(r.firstCall), "", refFirstCall, ""},
		{fmt.Sprintf("upsert → ack, p50 / p99 / max, %d upserts", len(r.upserts)), dist(r.upserts), "", refAverage, ""},
		{"upserts, one at a time", perSecond(len(r.upserts), r.upsertWall), "", "", ""},
		{fmt.Sprintf("code → door command, p50 / p99 / max, %d cycles", len(cyc.command)), dist(cyc.command), "", "",
			target("p99 < 5 ms", cyc.command.pct(0.99) < 5*time.Millisecond)},
		{`code → display "opened", p50 / p99 / max`, dist(cyc.opened), "", "", ""},
		{"code → status event (full door cycle), p50 / p99 / max", dist(cyc.done), "", "", ""},
		{fmt.Sprintf("full door cycles, %d at a time", cfg.cycleWorkers), perSecond(len(cyc.done), r.cycleWall), "", "", ""},
		{fmt.Sprintf("bytes written to the block layer per upsert; per full door cycle (data dir on %s)", r.wear.fs),
			perOp(r.wear.upserts, len(r.upserts)) + "; " + perOp(r.wear.cycles, len(cyc.done)), "", "", ""},
		{"… the same at the data dir's block device " + cmp.Or(r.wear.dev, "(none)") + ", journal included, all writers",
			r.wear.deviceRow(len(r.upserts), len(cyc.done)), "", "", ""},
		{fmt.Sprintf("broker throughput, QoS 1, %d B, %d messages", payloadSize, cfg.flood),
			flood(r.gwBroker.flood), flood(r.mqBroker.flood), "", ""},
		{"… publisher's window: the broker's receive maximum (CONNACK)",
			fmt.Sprint(r.gwBroker.receiveMax), fmt.Sprint(r.mqBroker.receiveMax), "", ""},
		{"broker latency under that flood, p50 / p99", ms(r.gwBroker.flood.latency.pct(0.5)) + " / " + ms(r.gwBroker.flood.latency.pct(0.99)),
			ms(r.mqBroker.flood.latency.pct(0.5)) + " / " + ms(r.mqBroker.flood.latency.pct(0.99)), "", ""},
		{fmt.Sprintf("broker round trip, one at a time, p50 / p99 / max, %d messages", cfg.roundTrips),
			dist(r.gwBroker.roundTrip.latency), dist(r.mqBroker.roundTrip.latency), "", ""},
	}
}

// printMethod prints how each figure of the table was taken.
func printMethod(w io.Writer, cfg config) {
	fmt.Fprint(w, `
How it was measured:
- Everything runs on this machine over 127.0.0.1; the bench's MQTT clients
  (paho.golang, MQTT 5) share the CPU with the process measured.
- The gateway is built without the race detector and run as a child process
  with --sim-doors 0 (the bench plays the door board), a fresh data dir, a
  --code-key and --grace 24h (the door cycles reuse courier codes).
- Start-to-ready: exec → the gateway's "locker ready" log line on stderr, fresh
  data dir each run; for Mosquitto, exec → its port accepts a TCP connection
  (polled every 0.2 ms). Mosquitto is stopped with SIGKILL: 2.0 handles
  SIGTERM only at the next network event, seconds later on an idle broker.
- RSS is VmRSS of /proc/PID/status (anon = heap and stacks, file = mapped
  binary, libraries and database file); MB = 10^6 bytes. Idle = after start
  and a settle of `+cfg.settle.String()+`, before any client connects.
- Latencies are from before the client's publish call to the answer's arrival
  in the client's receive callback: p50 / p99 / max (mean).
- Upserts: locky/down/reservations, one in flight, the next after the ack;
  `+fmt.Sprint(cfg.reservations-cfg.doors)+` cancelled (history) then `+fmt.Sprint(cfg.doors)+` arriving, one per door of `+fmt.Sprint(cfg.doors)+`.
- Bytes written (SD-card wear): write_bytes of the gateway's /proc/PID/io
  over all the upserts, then over all the door cycles, divided by their
  number. It counts the bytes the process dirtied in the page cache for the
  block layer (bbolt's pwrite of each commit's pages, 4 KiB each, then
  fdatasync), not the file system's journal; on tmpfs it is 0, so the data dir
  (under $TMPDIR) must be on a real file system. The device row is the
  sectors written to the data dir's block device (/sys/dev/block/MAJ:MIN/stat)
  over the same spans, by every writer: the file system's journal and
  metadata included, exact only when nothing else writes to that device
  (TMPDIR on a file system of its own, such as a loop device).
- Door cycle: code on locky/screen/code → open command on the door's topic →
  the bench publishes {"state":"open"} (retained) → display "opened" →
  the bench publishes {"state":"closed"} → reservation.stored (first cycle of a
  door, deposit code) or reservation.reopened (the next ones, courier code) on
  locky/up/events.
- Broker runs, same client code for both brokers: one publisher, one
  subscriber, QoS 1 both ways, 64-byte payloads; the flood is published
  without waiting for PUBACKs (bounded by the broker's receive maximum), the
  round trip publishes each message after the previous one arrived. Each
  broker runs with its default queues and in-flight window; Mosquitto with
  persistence off and TCP_NODELAY.
`)
	printCloudMethod(w, cfg)
}

// printCloudMethod prints how the cloud bridge's figures were taken.
func printCloudMethod(w io.Writer, cfg config) {
	fmt.Fprint(w, `- Cloud bridge: a second Mosquitto is the cloud broker (persistence off,
  max_queued_messages 0 = no bound, max_inflight_messages 100, anonymous);
  a fresh gateway runs with --cloud-url to it and --locker-id `+benchLocker+`,
  with `+fmt.Sprint(cfg.doors)+` doors and one arriving reservation each.
  Door closed → event: door cycles as above, one at a time; from before the
  bench's publish of {"state":"closed"} on locky/doors/N/state to the event's
  arrival at a subscriber of lockers/`+benchLocker+`/up/events on the cloud
  broker (QoS 1, clean session), which checks that its event_id is the
  local event's.
- Replay: once the outbox is empty, the cloud broker gets SIGKILL; when the
  gateway reports the link down (locky_bridge_link_up 0 on /metrics), the
  bench sends `+fmt.Sprint(cfg.outage)+` door upserts on locky/down/doors, one at a time, each
  acked locally: `+fmt.Sprint(cfg.outage)+` acks in the outbox (about 40 bytes each; they travel
  the same outbox and bridge as events). Then Mosquitto starts again on the
  same port (no sessions survive) and the bench subscribes at once, with a
  clean session, to lockers/`+benchLocker+`/up/# and lockers/`+benchLocker+`/status;
  the gateway comes back when its reconnect back-off ends (jittered, doubling
  from 1 s). Its live status "online" marks the reconnection (a retained one
  would mean it came first, and the run fails). The rate is the messages
  received / (last new one − reconnection); time to drain is from the restart
  to the last one. Loss, duplicates and order are checked by msg_id, and the
  outbox gauge must return to 0.
- The reference design's figures are quoted from SPEC §1 (its own hardware
  and operation, not measured here); the targets are SPEC §9's, for a 2-core
  x86 machine.
`)
}

// cloudRows are the rows of the cloud bridge.
func cloudRows(cfg config, c cloudResult) [][]string {
	rp := c.replay
	rate := float64(rp.distinct) / rp.drain().Seconds()
	lost := rp.lost(c.outage)
	quality := fmt.Sprintf("%d lost, %d duplicates, %d out of order", lost, rp.duplicates, rp.outOfOrder)
	if rp.refused > 0 {
		quality += fmt.Sprintf(", %d acks not ok", rp.refused)
	}
	if rp.other > 0 {
		quality += fmt.Sprintf(", %d other messages", rp.other)
	}
	return [][]string{
		{fmt.Sprintf("door closed → event at the cloud subscriber, link up, p50 / p99 / max, %d cycles", len(c.closedCloud)),
			dist(c.closedCloud), "", "", ""},
		{"… door closed → the same event at the local back-end client", dist(c.closedLocal), "", "", ""},
		{fmt.Sprintf("outbox replay to Mosquitto after an outage of %d messages: gateway reconnected → all received", c.outage),
			fmt.Sprintf("%.0f events/s (%s)", rate, secs(rp.drain())), "", "",
			target("replay > 5 000 events/s", rate > 5000 && lost == 0)},
		{"… time to drain: cloud broker restarted → all received; of which restart → gateway reconnected (its back-off)",
			secs(rp.lastAt.Sub(rp.restarted)) + "; " + secs(rp.linkUp.Sub(rp.restarted)), "", "", ""},
		{"… loss, duplicates, order (by msg_id)", quality, "", "", target("zero loss", lost == 0)},
		{"… the outage: upserts while down, one at a time; outbox before the restart; failed reconnects",
			fmt.Sprintf("%d in %s (%s); %.0f messages; %.0f", c.outage, secs(c.produceWall), perSecond(c.outage, c.produceWall),
				c.outboxBefore, c.connectErrors), "", "", ""},
	}
}
