package dashboards

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/metricspush"
	"github.com/locky-edge/locky/gateway/metricspush/vmtest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// waitLimit bounds every wait in these tests: a broken feature fails the test
// instead of hanging it. It is not a timing assertion.
const waitLimit = 15 * time.Second

const (
	scrapedLocker = "test-locker" // scraped by VictoriaMetrics every second
	pushedLocker  = "test-pushed" // the same gateway's metrics, pushed twice by metricspush
)

// TestPanelsReturnData runs a gateway with a simulated locker and its bridge
// to a real Mosquitto, has a real VictoriaMetrics scrape it, drives a workload
// through every kind of door and code event, pushes twice through metricspush,
// feeds the lock board panels from the real drivers (startLockBoards), and
// then asks VictoriaMetrics every query of every panel.
func TestPanelsReturnData(t *testing.T) {
	dashes := loadDashboards(t)
	cloud := testenv.StartMosquitto(t)

	cfg := gateway.Defaults()
	cfg.LockerID = scrapedLocker
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.CloudURL = cloud.URL()
	cfg.DoorTimeout = 300 * time.Millisecond // a jammed door becomes a fault quickly
	cfg.LeftOpenAfter = 300 * time.Millisecond
	g := gatewaytest.Start(t, cfg)
	metricsURL := "http://" + g.HTTPAddr() + "/metrics"

	if !strings.Contains(get(t, metricsURL), "\nlocky_bridge_link_up ") {
		t.Fatalf("the gateway with --cloud-url serves no locky_bridge_link_up; the cloud link panels need it")
	}
	vm := vmtest.Start(t, vmtest.Target{Addr: g.HTTPAddr(), Labels: map[string]string{"locker": scrapedLocker}})

	runWorkload(t, g)
	boards := startLockBoards(t)
	boards.push(t, vm.ImportURL())

	pushSet := metrics.NewSet()
	p, err := metricspush.New(metricspush.Config{
		URL: vm.ImportURL(), LockerID: pushedLocker, Metrics: pushSet, Logger: testenv.Logger(t),
		Write: func(w io.Writer) {
			io.WriteString(w, get(t, metricsURL))
			pushSet.WritePrometheus(w)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Twice: a push carries the results of those before it.
	for range 2 {
		if err := p.Push(context.Background()); err != nil {
			t.Fatalf("push to VictoriaMetrics: %v", err)
		}
	}

	t.Run("the workflow counters count the workload, the wrong code as invalid_code", func(t *testing.T) {
		want := map[string]float64{
			`locky_workflow_code_attempts_total{locker="test-locker", result="invalid_code"}`: 1,
			`locky_workflow_code_attempts_total{locker="test-locker", result="opened"}`:       3,
			`locky_workflow_code_attempts_total{locker="test-locker", result="door_fault"}`:   1,
			`locky_workflow_door_forced_open_total{locker="test-locker"}`:                     1,
			`locky_workflow_door_left_open_total{locker="test-locker"}`:                       1,
			`locky_workflow_door_faults_total{locker="test-locker"}`:                          1,
			`locky_workflow_door_cycles_total{locker="test-locker"}`:                          3,
		}
		for expr, n := range want {
			got, err := vm.WaitFor(expr, waitLimit, func(s []vmtest.Sample) bool { return len(s) == 1 && s[0].Value == n })
			if err != nil {
				t.Errorf("%s: %v; want %v", expr, err, n)
			} else if got[0].Labels["job"] != "locky" {
				t.Errorf("%s: labels %v; want the scrape job's", expr, got[0].Labels)
			}
		}
	})
	t.Run("push delivers samples with the locker label", func(t *testing.T) {
		got, err := vm.WaitFor(`locky_build_info{locker="test-pushed"}`, waitLimit, vmtest.NonEmpty)
		if err != nil {
			t.Fatal(err)
		}
		if l := got[0].Labels; len(got) != 1 || l["job"] != "" || l["version"] != gateway.Version {
			t.Fatalf("pushed build info %v; want one series, version %q, no scrape labels", got, gateway.Version)
		}
		expr := `locky_workflow_code_attempts_total{locker="test-pushed", result="invalid_code"}`
		if _, err := vm.WaitFor(expr, waitLimit, func(s []vmtest.Sample) bool { return len(s) == 1 && s[0].Value == 1 }); err != nil {
			t.Fatalf("%s: %v; want 1", expr, err)
		}
		expr = `locky_metrics_pushes_total{locker="test-pushed", result="ok"}`
		if _, err := vm.WaitFor(expr, waitLimit, func(s []vmtest.Sample) bool { return len(s) == 1 && s[0].Value == 1 }); err != nil {
			t.Fatalf("%s: %v; want 1", expr, err)
		}
	})

	t.Run("the lock board panels show both drivers", func(t *testing.T) {
		boards.checkPanels(t, vm, dashboardNamed(t, dashes, "Locker"))
	})

	for _, d := range dashes {
		vars := map[bool]string{false: scrapedLocker, true: "(" + scrapedLocker + "|" + pushedLocker + ")"}
		locker := vars[d.Templating.List[0].Multi]
		for _, p := range d.queryPanels() {
			for _, tg := range p.Targets {
				t.Run(fmt.Sprintf("%s/%s/%s", d.Title, p.Title, tg.RefID), func(t *testing.T) {
					expr := expand(tg.Expr, locker)
					if _, err := vm.WaitFor(expr, waitLimit, vmtest.NonEmpty); err != nil {
						t.Errorf("dashboard %q, panel %q, query %s: %v\n%s", d.Title, p.Title, tg.RefID, err, expr)
					}
				})
			}
		}
	}
}

// expand substitutes Grafana's variables the way Grafana would for a short
// time range ending now.
func expand(expr, locker string) string {
	return strings.NewReplacer(
		"${locker}", locker, "$locker", locker,
		"$__rate_interval", "1m", "$__interval_ms", "15000", "$__interval", "15s",
		"$__range_ms", "300000", "$__range_s", "300", "$__range", "5m",
	).Replace(expr)
}

func TestExpandLeavesNoVariable(t *testing.T) {
	for _, d := range loadDashboards(t) {
		for _, p := range d.queryPanels() {
			for _, tg := range p.Targets {
				if e := expand(tg.Expr, "x"); strings.Contains(e, "$") {
					t.Errorf("dashboard %q, panel %q: a variable the test does not know: %s", d.Title, p.Title, e)
				}
			}
		}
	}
}

// runWorkload drives every counter the panels show: a deposit and a pickup,
// a door left open, a jammed door, a wrong code and a forced door.
func runWorkload(t *testing.T, g *gatewaytest.Gateway) {
	t.Helper()
	c := gatewaytest.Connect(t, g.MQTTAddr(), contract.TopicAcks, contract.TopicEvents, contract.TopicScreenDisplay)
	c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, 3, "300001", "300002", "300003"))
	c.MustAck("reservations", gatewaytest.Reservation("m-2", "R2", 1, 4, "400001", "400002", "400003"))

	code := func(code, requestID, result string) {
		t.Helper()
		c.Code(code, requestID)
		c.Display(requestID, result)
	}
	code("300001", "r1", contract.ResultOpened)
	g.SimDoor(t, 3, "close")
	c.Event(contract.EventStored, "R1", 3)
	code("300002", "r2", contract.ResultOpened)
	c.Event(contract.EventLeftOpen, "R1", 3) // LeftOpenAfter passes before the close
	g.SimDoor(t, 3, "close")
	c.Event(contract.EventDelivered, "R1", 3)

	g.SimDoor(t, 4, "jam")
	code("400001", "r3", contract.ResultDoorFault)
	g.SimDoor(t, 4, "unjam")
	code("400001", "r4", contract.ResultOpened)
	g.SimDoor(t, 4, "close")
	c.Event(contract.EventStored, "R2", 4)

	code("999999", "r5", contract.ResultInvalidCode)
	g.SimDoor(t, 9, "force")
	c.Event(contract.EventForcedOpen, "", 9)
}

func get(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}
