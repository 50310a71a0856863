package bridge

import (
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/testenv"
)

// TestAnUnhandledTopicIsNotRetried: a cloud message mapped onto a topic no
// handler of the locker takes (a mapping mistake, e.g. onto the door
// commands) is acknowledged and counted dropped once, not delivered again
// at every back-off step; the message behind it follows.
func TestAnUnhandledTopicIsNotRetried(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	backend := newCloudClient(t, cloud.URL(), "backend", "", "", "lockers/+/up/#")
	loc := newLocal(t)
	loc.unhandled = "locky/doors/"
	set := metrics.NewSet()
	b := startBridge(t, Config{URL: cloud.URL(), Outbox: newStore(t), Local: loc, Metrics: set,
		Down: []Mapping{{From: "lockers/{id}/down/#", To: "locky/down/#", QoS: 1}, {From: "lockers/{id}/doors/#", To: "locky/doors/#", QoS: 1}}})
	waitUntil(t, "link up", b.LinkUp)

	backend.publish(t, "lockers/L1/doors/7/command", `{"action":"open"}`)
	backend.publish(t, "lockers/L1/down/reservations", `{"msg_id":"m-1"}`)
	loc.expect(t, `locky/down/reservations {"msg_id":"m-1"}`)
	if n := loc.attemptsOf(`{"action":"open"}`); n != 1 {
		t.Errorf("the unhandled message was offered %d times; want once", n)
	}
	if got := metricValue(t, set, metricRetries); got != 0 {
		t.Errorf("%s = %v; want 0: nothing to retry", metricRetries, got)
	}
	if got := metricValue(t, set, metricDownUnmapped); got != 1 {
		t.Errorf("%s = %v; want 1", metricDownUnmapped, got)
	}
}
