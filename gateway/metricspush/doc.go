// Package metricspush sends a locker's metrics to VictoriaMetrics, for a
// locker behind 4G that nobody can scrape (SPEC §8).
//
// Every Interval the Pusher writes the metrics text (Prometheus exposition
// format, as GET /metrics serves it), gzips it and POSTs it to the
// VictoriaMetrics import endpoint /api/v1/import/prometheus with
// extra_label=locker=<id>, so that every sample carries the locker's id.
//
// A push that fails (link down, timeout, an answer other than 2xx) drops that
// sample: nothing is queued or retried, and the next push sends fresh values.
// Counters lose nothing by it, since the next sample carries their total; the
// graph only has a gap. Failures are counted and their log is rate-limited.
//
// Its place in the layering: part of the assembly (gateway/), which starts
// it; it imports nothing of the locker.
package metricspush
