package dashboards

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/eclipse/paho.golang/paho"

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
	pushedLocker  = "test-pushed" // the same gateway's metrics, pushed once by metricspush
)

// TestPanelsReturnData runs a gateway with a simulated locker and its bridge
// to a real Mosquitto, has a real VictoriaMetrics scrape it, drives a workload
// through every kind of door and code event, pushes once through metricspush,
// and then asks VictoriaMetrics every query of every panel.
func TestPanelsReturnData(t *testing.T) {
	boards := loadDashboards(t)
	cloud := testenv.StartMosquitto(t)

	cfg := gateway.Defaults()
	cfg.LockerID = scrapedLocker
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.CloudURL = cloud.URL()
	cfg.DoorTimeout = 300 * time.Millisecond // a jammed door becomes a fault quickly
	cfg.LeftOpenAfter = 300 * time.Millisecond
	g := startGateway(t, cfg)
	metricsURL := "http://" + g.HTTPAddr() + "/metrics"

	if !strings.Contains(get(t, metricsURL), "\nlocky_bridge_link_up ") {
		t.Fatalf("the gateway with --cloud-url serves no locky_bridge_link_up; the cloud link panels need it")
	}
	vm := vmtest.Start(t, vmtest.Target{Addr: g.HTTPAddr(), Labels: map[string]string{"locker": scrapedLocker}})

	runWorkload(t, g)

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
	if err := p.Push(context.Background()); err != nil {
		t.Fatalf("push to VictoriaMetrics: %v", err)
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
		expr = `locky_metrics_pushes_total{locker="test-pushed"}`
		if _, err := vm.WaitFor(expr, waitLimit, func(s []vmtest.Sample) bool { return len(s) == 1 && s[0].Value == 1 }); err != nil {
			t.Fatalf("%s: %v; want 1", expr, err)
		}
	})

	for _, d := range boards {
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
func runWorkload(t *testing.T, g *gateway.Gateway) {
	t.Helper()
	c := connect(t, g.MQTTAddr())
	c.down("reservations", reservation("m-1", "R1", 3, "300001", "300002", "300003"))
	c.down("reservations", reservation("m-2", "R2", 4, "400001", "400002", "400003"))

	c.code("300001", "r1", contract.ResultOpened)
	sim(t, g, 3, "close")
	c.event(contract.EventStored, "R1")
	c.code("300002", "r2", contract.ResultOpened)
	c.event(contract.EventLeftOpen, "R1") // LeftOpenAfter passes before the close
	sim(t, g, 3, "close")
	c.event(contract.EventDelivered, "R1")

	sim(t, g, 4, "jam")
	c.code("400001", "r3", contract.ResultDoorFault)
	sim(t, g, 4, "unjam")
	c.code("400001", "r4", contract.ResultOpened)
	sim(t, g, 4, "close")
	c.event(contract.EventStored, "R2")

	c.code("999999", "r5", contract.ResultInvalidCode)
	sim(t, g, 9, "force")
	c.event(contract.EventForcedOpen, "")
}

func reservation(msgID, id string, door int, deposit, pickup, courier string) contract.DownMessage {
	return contract.DownMessage{MsgID: msgID, Op: contract.OpUpsert, Reservation: &contract.Reservation{
		ID: id, Version: 1, Door: door, Status: contract.StatusArriving,
		DepositCode: deposit, PickupCode: pickup, CourierCode: courier,
	}}
}

// startGateway runs a gateway until the test ends.
func startGateway(t *testing.T, cfg gateway.Config) *gateway.Gateway {
	return gatewaytest.Start(t, cfg).Gateway
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

func sim(t *testing.T, g *gateway.Gateway, door int, action string) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s/sim/doors/%d/%s", g.HTTPAddr(), door, action), "", nil)
	if err != nil {
		t.Fatalf("sim %s door %d: %v", action, door, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sim %s door %d: status %s", action, door, resp.Status)
	}
}

// client is an MQTT 5 client of the gateway's broker that records the
// answers and events it receives.
type client struct {
	t  *testing.T
	c  *paho.Client
	mu sync.Mutex
	in []*paho.Publish
	ch chan struct{}
}

func connect(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	cl := &client{t: t, ch: make(chan struct{}, 1)}
	cl.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.mu.Lock()
			cl.in = append(cl.in, pr.Packet)
			cl.mu.Unlock()
			select {
			case cl.ch <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if ca, err := cl.c.Connect(ctx, &paho.Connect{ClientID: "dashboards-test", CleanStart: true, KeepAlive: 30}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	subs := []paho.SubscribeOptions{{Topic: contract.TopicAcks, QoS: 1}, {Topic: contract.TopicEvents, QoS: 1}, {Topic: contract.TopicScreenDisplay, QoS: 1}}
	if _, err := cl.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = cl.c.Disconnect(&paho.Disconnect{}) })
	return cl
}

func (c *client) publish(topic string, v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: b}); err != nil {
		c.t.Fatalf("publish %s: %v", topic, err)
	}
}

// await waits for a message on topic that decodes into v and that match accepts.
func await[T any](c *client, topic string, match func(T) bool) {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for {
		c.mu.Lock()
		for _, m := range c.in {
			var v T
			if m.Topic == topic && json.Unmarshal(m.Payload, &v) == nil && match(v) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-c.ch:
		case <-deadline:
			c.t.Fatalf("no matching message on %s", topic)
		}
	}
}

// down sends a downstream message and waits for its positive ack.
func (c *client) down(entity string, m contract.DownMessage) {
	c.t.Helper()
	c.publish(contract.TopicDownPrefix+entity, m)
	await(c, contract.TopicAcks, func(a contract.Ack) bool {
		if a.MsgID == m.MsgID && !a.OK {
			c.t.Fatalf("%s: ack %+v; want ok", m.MsgID, a)
		}
		return a.MsgID == m.MsgID
	})
}

// code enters a code on the screen and waits for the answer.
func (c *client) code(code, requestID, result string) {
	c.t.Helper()
	c.publish(contract.TopicScreenCode, contract.CodeRequest{Code: code, RequestID: requestID})
	await(c, contract.TopicScreenDisplay, func(d contract.Display) bool {
		if d.RequestID == requestID && d.Result != result {
			c.t.Fatalf("code %s: %+v; want %s", code, d, result)
		}
		return d.RequestID == requestID
	})
}

// event waits for an event of that type and reservation.
func (c *client) event(typ, reservation string) {
	c.t.Helper()
	await(c, contract.TopicEvents, func(e contract.Event) bool { return e.Type == typ && e.Reservation == reservation })
}
