package bridge

import (
	"slices"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// bridgeMetrics are created at New so that they exist, at zero, before the
// first connection. An outcome is a label of one family (result=…, reason=…),
// not a family of its own.
type bridgeMetrics struct {
	connects      *metrics.Counter // connections established
	connectErrors *metrics.Counter // failed attempts: dial, TLS, refused CONNECT
	sent          *metrics.Counter // upstream PUBLISHes written, resends included
	acked         *metrics.Counter // upstream PUBACKs with success
	rejected      *metrics.Counter // upstream PUBACKs with an error (kept, resent later)
	dropped       *metrics.Counter // outbox messages no Up mapping matches, by the store's count of those removed
	upDelivered   *metrics.Counter // outbox messages removed after their PUBACK (QoS 0: written), by the store's count
	delivered     *metrics.Counter // downstream messages delivered locally and acked
	unmapped      *metrics.Counter // downstream messages no Down mapping matches (acked, dropped)
	overflow      *metrics.Counter // QoS 0 downstream messages dropped: too many waiting
	retries       *metrics.Counter // failed local deliveries of downstream messages, each retried
}

// The series of a bridge. The outbox messages it drops (no Up mapping
// matches them) are counted with the outbox's own drops, under their reason.
const (
	metricLinkUp        = "locky_bridge_link_up"
	metricLinkDown      = "locky_bridge_link_down_seconds"
	metricInflight      = "locky_bridge_inflight_messages"
	metricConnected     = `locky_bridge_connects_total{result="ok"}`
	metricConnectFailed = `locky_bridge_connects_total{result="failed"}`
	metricSent          = "locky_bridge_messages_sent_total"
	metricAccepted      = `locky_bridge_pubacks_total{result="accepted"}`
	metricRejected      = `locky_bridge_pubacks_total{result="rejected"}`
	metricUnmapped      = `locky_outbox_dropped_total{reason="unmapped"}`
	metricUpDelivered   = "locky_outbox_delivered_total" // with locky_outbox_dropped_total: every message the outbox took, once
	metricDelivered     = `locky_bridge_messages_received_total{result="delivered"}`
	metricDownUnmapped  = `locky_bridge_messages_received_total{result="unmapped"}`
	metricDownDropped   = `locky_bridge_messages_received_total{result="dropped"}`
	metricRetrying      = "locky_bridge_downstream_retrying"
	metricWaiting       = "locky_bridge_downstream_waiting_messages"
	metricRetries       = "locky_bridge_downstream_retries_total"
)

var metricNames = []string{
	metricLinkUp, metricLinkDown, metricInflight, metricConnected, metricConnectFailed, metricSent,
	metricAccepted, metricRejected, metricUnmapped, metricUpDelivered, metricDelivered, metricDownUnmapped, metricDownDropped,
	metricRetrying, metricWaiting, metricRetries,
}

func newMetrics(s *metrics.Set, b *Bridge) (*bridgeMetrics, error) {
	have := s.ListMetricNames()
	for _, n := range metricNames {
		if slices.Contains(have, n) {
			return nil, configErr("Metrics already holds %s: give each bridge its own metrics.Set", n)
		}
	}
	s.NewGauge(metricLinkUp, func() float64 {
		if b.LinkUp() {
			return 1
		}
		return 0
	})
	s.NewGauge(metricLinkDown, func() float64 {
		if b.LinkUp() {
			return 0
		}
		return time.Since(time.Unix(0, b.downSince.Load())).Seconds()
	})
	s.NewGauge(metricInflight, func() float64 { return float64(b.inflight.Load()) })
	s.NewGauge(metricRetrying, func() float64 {
		if b.retrying.Load() {
			return 1
		}
		return 0
	})
	s.NewGauge(metricWaiting, func() float64 { return float64(b.waiting.Load()) })
	return &bridgeMetrics{
		connects:      s.NewCounter(metricConnected),
		connectErrors: s.NewCounter(metricConnectFailed),
		sent:          s.NewCounter(metricSent),
		acked:         s.NewCounter(metricAccepted),
		rejected:      s.NewCounter(metricRejected),
		dropped:       s.NewCounter(metricUnmapped),
		upDelivered:   s.NewCounter(metricUpDelivered),
		delivered:     s.NewCounter(metricDelivered),
		unmapped:      s.NewCounter(metricDownUnmapped),
		overflow:      s.NewCounter(metricDownDropped),
		retries:       s.NewCounter(metricRetries),
	}, nil
}
