package gatewaytest

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

	"github.com/locky-edge/locky/handlers/contract"
)

// SimDoor sends an action (close, force, fault, jam, unjam) to a simulated
// door over the gateway's HTTP controls.
func (g *Gateway) SimDoor(t testing.TB, door int, action string) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s/sim/doors/%d/%s", g.HTTPAddr(), door, action), "", nil)
	if err != nil {
		t.Fatalf("sim %s door %d: %v", action, door, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sim %s door %d: status %d", action, door, resp.StatusCode)
	}
}

// Message is a message a Client received.
type Message struct {
	Topic   string
	Payload []byte
	Props   *paho.PublishProperties
}

// Client is a real MQTT 5 client that records every message it receives, so
// that a test can await what it expects.
type Client struct {
	t testing.TB
	*recorder
}

type recorder struct {
	c  *paho.Client
	mu sync.Mutex
	in []Message
	ch chan struct{}
}

// With returns the client bound to another test (a subtest).
func (c *Client) With(t testing.TB) *Client { return &Client{t: t, recorder: c.recorder} }

// Connect connects a client to addr (any MQTT broker) and subscribes it to filters.
func Connect(t testing.TB, addr string, filters ...string) *Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	cl := &Client{t: t, recorder: &recorder{ch: make(chan struct{}, 1)}}
	cl.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.mu.Lock()
			cl.in = append(cl.in, Message{pr.Packet.Topic, bytes.Clone(pr.Packet.Payload), pr.Packet.Properties})
			cl.mu.Unlock()
			select {
			case cl.ch <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
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

// Publish publishes v (a string, bytes, or a value encoded as JSON) with QoS 1.
func (c *Client) Publish(topic string, v any) {
	c.t.Helper()
	c.PublishWith(&paho.Publish{Topic: topic, QoS: 1, Payload: encode(c.t, v)})
}

// PublishWith publishes p as it is.
func (c *Client) PublishWith(p *paho.Publish) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
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

// Received returns a copy of every message received so far.
func (c *Client) Received() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.in...)
}

// Await returns the first message received on topic that match accepts.
func (c *Client) Await(topic string, match func([]byte) bool) Message {
	c.t.Helper()
	deadline := time.After(WaitLimit)
	for {
		for _, m := range c.Received() {
			if m.Topic == topic && match(m.Payload) {
				return m
			}
		}
		select {
		case <-c.ch:
		case <-deadline:
			var seen []string
			for _, m := range c.Received() {
				p := string(m.Payload)
				if len(p) > 300 {
					p = p[:300] + "…"
				}
				seen = append(seen, m.Topic+" "+p)
			}
			c.t.Fatalf("no matching message on %s; received:\n%s", topic, strings.Join(seen, "\n"))
			return Message{}
		}
	}
}

// AwaitCount waits until n received messages on topic match.
func (c *Client) AwaitCount(topic string, match func([]byte) bool, n int) {
	c.t.Helper()
	deadline := time.After(WaitLimit)
	for c.Count(topic, match) < n {
		select {
		case <-c.ch:
		case <-deadline:
			c.t.Fatalf("%d matching messages on %s; want %d", c.Count(topic, match), topic, n)
		}
	}
}

// Count returns how many received messages on topic match.
func (c *Client) Count(topic string, match func([]byte) bool) int {
	n := 0
	for _, m := range c.Received() {
		if m.Topic == topic && match(m.Payload) {
			n++
		}
	}
	return n
}

// Ack waits for the ack of msgID.
func (c *Client) Ack(msgID string) contract.Ack {
	c.t.Helper()
	m := c.Await(contract.TopicAcks, func(p []byte) bool {
		var a contract.Ack
		return json.Unmarshal(p, &a) == nil && a.MsgID == msgID
	})
	var a contract.Ack
	_ = json.Unmarshal(m.Payload, &a)
	return a
}

// Display waits for the display answer to requestID with the given result.
func (c *Client) Display(requestID, result string) contract.Display {
	c.t.Helper()
	m := c.Await(contract.TopicScreenDisplay, func(p []byte) bool {
		var d contract.Display
		return json.Unmarshal(p, &d) == nil && d.RequestID == requestID && d.Result == result
	})
	var d contract.Display
	_ = json.Unmarshal(m.Payload, &d)
	return d
}

// Event waits for an event of type typ for the reservation (any door when
// door is 0).
func (c *Client) Event(typ, reservation string, door int) contract.Event {
	c.t.Helper()
	m := c.Await(contract.TopicEvents, func(p []byte) bool {
		var e contract.Event // fresh each time: absent fields must not keep an earlier message's values
		return json.Unmarshal(p, &e) == nil && e.Type == typ && e.Reservation == reservation && (door == 0 || e.Door == door)
	})
	var e contract.Event
	_ = json.Unmarshal(m.Payload, &e)
	return e
}

// Code enters a code on the screen.
func (c *Client) Code(code, requestID string) {
	c.t.Helper()
	c.Publish(contract.TopicScreenCode, contract.CodeRequest{Code: code, RequestID: requestID})
}

// MustAck publishes a downstream message and fails unless its ack is ok.
func (c *Client) MustAck(entity string, m contract.DownMessage) {
	c.t.Helper()
	c.Publish(contract.TopicDownPrefix+entity, m)
	if a := c.Ack(m.MsgID); !a.OK {
		c.t.Fatalf("%s %s: ack %+v; want ok", entity, m.MsgID, a)
	}
}

// Reservation builds a downstream upsert of an arriving reservation.
func Reservation(msgID, id string, version uint64, door int, deposit, pickup, courier string) contract.DownMessage {
	return contract.DownMessage{MsgID: msgID, Op: contract.OpUpsert, Reservation: &contract.Reservation{
		ID: id, Version: version, Door: door, Status: contract.StatusArriving,
		DepositCode: deposit, PickupCode: pickup, CourierCode: courier,
	}}
}
