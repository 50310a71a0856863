package gateway_test

import (
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/metricspush/vmtest"
)

// TestMetricsArePushedWithTheLockerLabel runs a gateway with
// --metrics-push-url against a real VictoriaMetrics: a locker behind 4G
// cannot be scraped, so it pushes.
func TestMetricsArePushedWithTheLockerLabel(t *testing.T) {
	vm := vmtest.Start(t)
	cfg := testConfig(t)
	cfg.LockerID = "locker-push"
	cfg.MetricsPushURL = vm.ImportURL()
	cfg.MetricsPushInterval = time.Second
	startGateway(t, cfg)
	got, err := vm.WaitFor(`locky_build_info{locker="locker-push"}`, waitLimit, vmtest.NonEmpty)
	if err != nil {
		t.Fatalf("no pushed locky_build_info with the locker label: %v", err)
	}
	if got[0].Value != 1 {
		t.Fatalf("locky_build_info = %v; want 1", got[0].Value)
	}
	if _, err := vm.WaitFor(`locky_metrics_pushes_total{locker="locker-push"}`, waitLimit, vmtest.NonEmpty); err != nil {
		t.Fatalf("the push does not count itself: %v", err)
	}
}
