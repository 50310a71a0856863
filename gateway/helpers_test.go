package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

const waitLimit = gatewaytest.WaitLimit

type testGateway struct{ *gatewaytest.Gateway }

func testConfig(t testing.TB) gateway.Config { return gatewaytest.Config(t) }

func startGateway(t testing.TB, cfg gateway.Config) *testGateway {
	return &testGateway{gatewaytest.Start(t, cfg)}
}

func (tg *testGateway) stop(t testing.TB) { tg.Stop(t) }

// sim sends a command to the simulated door bank over HTTP.
func (tg *testGateway) sim(t testing.TB, door int, action string) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s/sim/doors/%d/%s", tg.HTTPAddr(), door, action), "", nil)
	if err != nil {
		t.Fatalf("sim %s door %d: %v", action, door, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sim %s door %d: status %d", action, door, resp.StatusCode)
	}
}

type received struct {
	topic   string
	payload []byte
	props   *paho.PublishProperties
}

// client is a real MQTT 5 client that records every message it receives.
type client struct {
	t testing.TB
	*recorder
}

type recorder struct {
	c  *paho.Client
	mu sync.Mutex
	in []received
	ch chan struct{}
}

// with returns the client bound to another test (a subtest).
func (c *client) with(t testing.TB) *client { return &client{t: t, recorder: c.recorder} }

// connect connects a client to addr and subscribes it to filters.
func connect(t testing.TB, addr string, filters ...string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	cl := &client{t: t, recorder: &recorder{ch: make(chan struct{}, 1)}}
	cl.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.mu.Lock()
			cl.in = append(cl.in, received{pr.Packet.Topic, bytes.Clone(pr.Packet.Payload), pr.Packet.Properties})
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
	ca, err := cl.c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("test-%p", cl), CleanStart: true, KeepAlive: 30})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	if len(filters) > 0 {
		subs := make([]paho.SubscribeOptions, len(filters))
		for i, f := range filters {
			subs[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
		}
		if _, err := cl.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	t.Cleanup(func() { _ = cl.c.Disconnect(&paho.Disconnect{}) })
	return cl
}

// publish publishes v (a string or a value encoded as JSON) with QoS 1.
func (c *client) publish(topic string, v any) {
	c.t.Helper()
	c.publishWith(&paho.Publish{Topic: topic, QoS: 1, Payload: encode(c.t, v)})
}

func (c *client) publishWith(p *paho.Publish) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := c.c.Publish(ctx, p); err != nil {
		c.t.Fatalf("publish %s: %v", p.Topic, err)
	}
}

func encode(t testing.TB, v any) []byte {
	switch p := v.(type) {
	case string:
		return []byte(p)
	case []byte:
		return p
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

// await returns the first message received on topic that match accepts.
func (c *client) await(topic string, match func([]byte) bool) received {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for {
		c.mu.Lock()
		for _, m := range c.in {
			if m.topic == topic && match(m.payload) {
				c.mu.Unlock()
				return m
			}
		}
		c.mu.Unlock()
		select {
		case <-c.ch:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			var seen []string
			for _, m := range c.in {
				p := string(m.payload)
				if len(p) > 300 {
					p = p[:300] + "…"
				}
				seen = append(seen, m.topic+" "+p)
			}
			c.t.Fatalf("no matching message on %s; received:\n%s", topic, strings.Join(seen, "\n"))
			return received{}
		}
	}
}

// awaitCount waits until n received messages on topic match.
func (c *client) awaitCount(topic string, match func([]byte) bool, n int) {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for c.count(topic, match) < n {
		select {
		case <-c.ch:
		case <-deadline:
			c.t.Fatalf("%d matching messages on %s; want %d", c.count(topic, match), topic, n)
		}
	}
}

// count returns how many received messages on topic match.
func (c *client) count(topic string, match func([]byte) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.in {
		if m.topic == topic && match(m.payload) {
			n++
		}
	}
	return n
}

// ack waits for the ack of msgID.
func (c *client) ack(msgID string) contract.Ack {
	c.t.Helper()
	var a contract.Ack
	m := c.await(contract.TopicAcks, func(p []byte) bool {
		return json.Unmarshal(p, &a) == nil && a.MsgID == msgID
	})
	_ = json.Unmarshal(m.payload, &a)
	return a
}

// display waits for the display answer to requestID with the given result.
func (c *client) display(requestID, result string) contract.Display {
	c.t.Helper()
	var d contract.Display
	m := c.await(contract.TopicScreenDisplay, func(p []byte) bool {
		return json.Unmarshal(p, &d) == nil && d.RequestID == requestID && d.Result == result
	})
	_ = json.Unmarshal(m.payload, &d)
	return d
}

// event waits for an event of type typ for the reservation (or door when
// reservation is empty).
func (c *client) event(typ, reservation string, door int) contract.Event {
	c.t.Helper()
	var e contract.Event
	m := c.await(contract.TopicEvents, func(p []byte) bool {
		return json.Unmarshal(p, &e) == nil && e.Type == typ && e.Reservation == reservation && (door == 0 || e.Door == door)
	})
	_ = json.Unmarshal(m.payload, &e)
	return e
}

// code enters a code on the screen.
func (c *client) code(code, requestID string) {
	c.t.Helper()
	c.publish(contract.TopicScreenCode, contract.CodeRequest{Code: code, RequestID: requestID})
}

// reservation builds a downstream upsert of an arriving reservation.
func reservation(msgID, id string, version uint64, door int, deposit, pickup, courier string) contract.DownMessage {
	return contract.DownMessage{MsgID: msgID, Op: contract.OpUpsert, Reservation: &contract.Reservation{
		ID: id, Version: version, Door: door, Status: contract.StatusArriving,
		DepositCode: deposit, PickupCode: pickup, CourierCode: courier,
	}}
}

// mustAck publishes a downstream message and fails unless its ack is ok.
func (c *client) mustAck(entity string, m contract.DownMessage) {
	c.t.Helper()
	c.publish(contract.TopicDownPrefix+entity, m)
	if a := c.ack(m.MsgID); !a.OK {
		c.t.Fatalf("%s %s: ack %+v; want ok", entity, m.MsgID, a)
	}
}

func statusOf(t testing.TB, g *testGateway, id string) string {
	t.Helper()
	r, err := g.Store().Reservation(id)
	if err != nil {
		t.Fatalf("reservation %s: %v", id, err)
	}
	return r.Status
}
