package bridge

import (
	"slices"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// bridgeMetrics are created at New so that they exist, at zero, before the
// first connection.
type bridgeMetrics struct {
	connects       *metrics.Counter // connections established
	connectErrors  *metrics.Counter // failed attempts: dial, TLS, refused CONNECT
	sent           *metrics.Counter // upstream PUBLISHes written, resends included
	acked          *metrics.Counter // upstream PUBACKs with success
	rejected       *metrics.Counter // upstream PUBACKs with an error (kept, resent later)
	dropped        *metrics.Counter // outbox messages no Up mapping matches
	downstream     *metrics.Counter // downstream messages delivered locally and acked
	downstreamErrs *metrics.Counter // downstream messages the local broker refused, or unmapped
}

var metricNames = []string{
	"locky_bridge_link_up", "locky_bridge_link_down_seconds", "locky_bridge_inflight",
	"locky_bridge_connects_total", "locky_bridge_connect_errors_total",
	"locky_bridge_sent_total", "locky_bridge_acked_total", "locky_bridge_rejected_total",
	"locky_bridge_dropped_total", "locky_bridge_downstream_total", "locky_bridge_downstream_errors_total",
}

func newMetrics(s *metrics.Set, b *Bridge) (*bridgeMetrics, error) {
	have := s.ListMetricNames()
	for _, n := range metricNames {
		if slices.Contains(have, n) {
			return nil, configErr("Metrics already holds %s: give each bridge its own metrics.Set", n)
		}
	}
	s.NewGauge("locky_bridge_link_up", func() float64 {
		if b.LinkUp() {
			return 1
		}
		return 0
	})
	s.NewGauge("locky_bridge_link_down_seconds", func() float64 {
		if b.LinkUp() {
			return 0
		}
		return time.Since(time.Unix(0, b.downSince.Load())).Seconds()
	})
	s.NewGauge("locky_bridge_inflight", func() float64 { return float64(b.inflight.Load()) })
	return &bridgeMetrics{
		connects:       s.NewCounter("locky_bridge_connects_total"),
		connectErrors:  s.NewCounter("locky_bridge_connect_errors_total"),
		sent:           s.NewCounter("locky_bridge_sent_total"),
		acked:          s.NewCounter("locky_bridge_acked_total"),
		rejected:       s.NewCounter("locky_bridge_rejected_total"),
		dropped:        s.NewCounter("locky_bridge_dropped_total"),
		downstream:     s.NewCounter("locky_bridge_downstream_total"),
		downstreamErrs: s.NewCounter("locky_bridge_downstream_errors_total"),
	}, nil
}
