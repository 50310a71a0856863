package gateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestMetricsFollowTheCloudLinkAndTheOutbox cuts the link to a real Mosquitto
// and checks what /metrics says of it: the link gauge goes down and up with
// it, the outbox grows while the locker works offline and drains once the
// link is back.
func TestMetricsFollowTheCloudLinkAndTheOutbox(t *testing.T) {
	const linkUp, outbox = "locky_bridge_link_up", "locky_outbox_messages"
	cloud := testenv.StartMosquitto(t)
	proxy := testenv.NewProxy(t, cloud.Addr)
	cfg := testConfig(t)
	cfg.LockerID = "locker-m"
	cfg.CloudURL = proxy.URL()
	g := startGateway(t, cfg)
	local := connect(t, g.MQTTAddr(), "locky/#")

	awaitSeries(t, g, linkUp, "1", equals(1))
	awaitSeries(t, g, outbox, "0", equals(0))

	proxy.Cut()
	awaitSeries(t, g, linkUp, "0 after the cut", equals(0))
	// Offline, the locker works on: an upsert (its ack), then two deliveries
	// (an ack and a reservation.stored each).
	local.MustAck("reservations", reservation("m-0", "R0", 1, 1, "100000", "200000", "300000"))
	first := awaitSeries(t, g, outbox, "at least 1 after an upsert", atLeastValue(1))
	for i := 1; i <= 2; i++ {
		id := fmt.Sprintf("R%d", i)
		deposit := fmt.Sprintf("%06d", 100000+i)
		local.MustAck("reservations", reservation(fmt.Sprintf("m-%d", i), id, 1, i+1,
			deposit, fmt.Sprintf("%06d", 200000+i), fmt.Sprintf("%06d", 300000+i)))
		local.Code(deposit, "d"+id)
		local.Display("d"+id, contract.ResultOpened)
		g.SimDoor(t, i+1, "close")
		local.Event(contract.EventStored, id, i+1)
	}
	awaitSeries(t, g, outbox, fmt.Sprintf("at least %v (it grows offline)", first+4), atLeastValue(first+4))
	if v := seriesValue(t, g, linkUp); v != 0 {
		t.Fatalf("%s %v while the link is cut; want 0", linkUp, v)
	}

	proxy.Restore()
	awaitSeries(t, g, linkUp, "1 after the restore", equals(1))
	awaitSeries(t, g, outbox, "0 (drained) after the restore", equals(0))
}

// TestWrongCodeCountsOneInvalidAttempt checks that one wrong code adds
// exactly one to the invalid_code attempts and nothing to the others.
func TestWrongCodeCountsOneInvalidAttempt(t *testing.T) {
	const invalid = `locky_workflow_code_attempts_total{result="invalid_code"}`
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), contract.TopicScreenDisplay)

	before := readMetrics(t, g)
	if _, ok := before[invalid]; !ok {
		t.Fatalf("/metrics has no %s before the first code; want it at 0", invalid)
	}
	c.Code("999999", "wrong")
	c.Display("wrong", contract.ResultInvalidCode)
	// The attempt is counted before the display is published.
	after := readMetrics(t, g)
	if d := after[invalid] - before[invalid]; d != 1 {
		t.Errorf("%s went from %v to %v; want one more", invalid, before[invalid], after[invalid])
	}
	for series, v := range after {
		if strings.HasPrefix(series, "locky_workflow_code_attempts_total{") && series != invalid && v != before[series] {
			t.Errorf("%s went from %v to %v after a wrong code; want unchanged", series, before[series], v)
		}
	}
}

// readMetrics reads the gateway's /metrics (Prometheus text format) into a
// map from series (name and labels as written) to value.
func readMetrics(t testing.TB, g *testGateway) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d; want 200", resp.StatusCode)
	}
	m, err := testenv.ParseMetrics(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return m
}

// seriesValue returns the value of one series of /metrics, which must exist.
func seriesValue(t testing.TB, g *testGateway, series string) float64 {
	t.Helper()
	v, ok := readMetrics(t, g)[series]
	if !ok {
		t.Fatalf("/metrics has no %s", series)
	}
	return v
}

func equals(want float64) func(float64) bool       { return func(v float64) bool { return v == want } }
func atLeastValue(want float64) func(float64) bool { return func(v float64) bool { return v >= want } }

// awaitSeries polls /metrics until ok accepts the value of series (want
// describes it) and returns that value. Gauges of the store are refreshed
// once a second, hence the polling; the limit only keeps a broken feature
// from hanging the test.
func awaitSeries(t testing.TB, g *testGateway, series, want string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(2 * waitLimit) // the bridge's reconnect back-off is part of the wait
	for {
		v := seriesValue(t, g, series)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v after %s; want %s", series, v, 2*waitLimit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStoreCommitsAreTimed(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), contract.TopicAcks)
	before := readMetrics(t, g)["locky_store_commit_seconds_count"]
	c.MustAck("reservations", reservation("m-1", "R1", 1, 1, "111111", "222222", "333333"))
	if after := readMetrics(t, g)["locky_store_commit_seconds_count"]; after < before+1 {
		t.Fatalf("locky_store_commit_seconds_count went from %v to %v after a committed upsert; want at least one more", before, after)
	}
}
