package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/testenv"
)

// limWait bounds every wait of these tests so that a broken limit fails
// instead of hanging; it is no timing assertion.
const limWait = 15 * time.Second

// startLimited starts a broker on a free port with cfg's limits, anonymous
// clients allowed unless cfg has users.
func startLimited(t *testing.T, cfg Config) (*Broker, *metrics.Set) {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.AllowAnonymous = len(cfg.Users) == 0
	cfg.Metrics = metrics.NewSet()
	if cfg.Logger == nil {
		cfg.Logger = testenv.QuietLogger(t)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, cfg.Metrics
}

// metricValue returns the value of a metric of s; 0 if it has none.
func metricValue(t *testing.T, s *metrics.Set, name string) float64 {
	t.Helper()
	return testenv.SetMetrics(t, s)[name]
}

// awaitMetric waits until a metric of s has the value want.
func awaitMetric(t *testing.T, s *metrics.Set, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(limWait)
	for {
		got := metricValue(t, s, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v; want %v", name, got, want)
		}
		time.Sleep(5 * time.Millisecond) // polling: the broker counts on its own goroutines
	}
}

// dialFrom dials addr from the loopback address from ("" for any).
func dialFrom(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: limWait}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %q: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var limClientSeq atomic.Int64

// limConnect connects a paho (MQTT 5) client from the loopback address from.
// It returns the CONNACK, and the client if it was accepted.
func limConnect(t *testing.T, addr, from string, cfg paho.ClientConfig) (*paho.Client, *paho.Connack) {
	t.Helper()
	cfg.Conn = dialFrom(t, addr, from)
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), limWait)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("lim-%d", limClientSeq.Add(1)), CleanStart: true})
	if ca == nil {
		t.Fatalf("connect from %q: no CONNACK: %v", from, err)
	}
	if ca.ReasonCode != 0 {
		return nil, ca
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, ca
}

func mustLimConnect(t *testing.T, addr, from string) *paho.Client {
	t.Helper()
	c, ca := limConnect(t, addr, from, paho.ClientConfig{})
	if c == nil {
		t.Fatalf("connect from %q: CONNACK 0x%02x; want success", from, ca.ReasonCode)
	}
	return c
}

// idleConns opens n connections that never send a byte, and returns a
// channel that gets a value as each one is closed by the broker.
func idleConns(t *testing.T, addr string, n int) <-chan struct{} {
	t.Helper()
	ended := make(chan struct{}, n)
	for range n {
		c := dialFrom(t, addr, "")
		go func() {
			var b [1]byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					ended <- struct{}{}
					return
				}
			}
		}()
	}
	return ended
}

func awaitN(t *testing.T, ch <-chan struct{}, n int, what string) {
	t.Helper()
	timeout := time.After(limWait)
	for i := range n {
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%d of %d %s", i, n, what)
		}
	}
}

// The raw MQTT of these tests: what a real client library would not send.

func mqttString(b *bytes.Buffer, s string) {
	b.WriteByte(byte(len(s) >> 8))
	b.WriteByte(byte(len(s)))
	b.WriteString(s)
}

func varint(n int) []byte {
	var out []byte
	for {
		b := byte(n & 0x7f)
		if n >>= 7; n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

func frame(header byte, body []byte) []byte {
	return append(append([]byte{header}, varint(len(body))...), body...)
}

// connectPacket is a CONNECT of MQTT 3.1.1 (version 4) or 5, clean start.
func connectPacket(version byte, id, user, pw string) []byte {
	var b bytes.Buffer
	mqttString(&b, "MQTT")
	b.WriteByte(version)
	flags := byte(0x02)
	if user != "" {
		flags |= 0xc0
	}
	b.Write([]byte{flags, 0, 30}) // keepalive 30 s
	if version == 5 {
		b.WriteByte(0) // no properties
	}
	mqttString(&b, id)
	if user != "" {
		mqttString(&b, user)
		mqttString(&b, pw)
	}
	return frame(0x10, b.Bytes())
}

// publishPacket is a PUBLISH with packet id 1.
func publishPacket(version byte, topic string, payload []byte, qos byte, retain bool) []byte {
	var b bytes.Buffer
	mqttString(&b, topic)
	if qos > 0 {
		b.Write([]byte{0, 1})
	}
	if version == 5 {
		b.WriteByte(0)
	}
	b.Write(payload)
	h := 0x30 | qos<<1
	if retain {
		h |= 1
	}
	return frame(h, b.Bytes())
}

// rawClient is a hand-driven MQTT connection.
type rawClient struct {
	c net.Conn
	r *bufio.Reader
}

func rawDial(t *testing.T, addr, from string) *rawClient {
	c := dialFrom(t, addr, from)
	return &rawClient{c: c, r: bufio.NewReader(c)}
}

func (c *rawClient) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := c.c.Write(b); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// packet reads the next packet: its type (the high nibble) and body. An
// error means the broker closed the connection.
func (c *rawClient) packet() (byte, []byte, error) {
	if err := c.c.SetReadDeadline(time.Now().Add(limWait)); err != nil {
		return 0, nil, err
	}
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(b&0x7f) << shift
		if shift += 7; b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return h >> 4, body, nil
}

// connack connects and returns the CONNACK's reason (return) code.
func (c *rawClient) connack(t *testing.T, version byte, id, user, pw string) byte {
	t.Helper()
	c.send(t, connectPacket(version, id, user, pw))
	typ, body, err := c.packet()
	if err != nil || typ != 2 || len(body) < 2 {
		t.Fatalf("want a CONNACK; got type %d %x, %v", typ, body, err)
	}
	return body[1]
}

// expectClosed checks the broker closes the connection without a packet.
func (c *rawClient) expectClosed(t *testing.T, what string) {
	t.Helper()
	typ, body, err := c.packet()
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("%s: got packet type %d %x; want the connection closed", what, typ, body)
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("%s: still open after %s", what, limWait)
	}
}

func TestIdleConnectionsPastTheCapEvictTheOldest(t *testing.T) {
	// The deadline is far: only evictions close connections, one for each
	// connection past the cap.
	b, set := startLimited(t, Config{MaxConnecting: 50, MaxPerAddr: 1000, ConnectTimeout: time.Hour})
	ended := idleConns(t, b.Addr(), 500)
	awaitN(t, ended, 450, "idle connections evicted")
	awaitMetric(t, set, `locky_broker_connections_refused_total{reason="evicted"}`, 450)
	if got := metricValue(t, set, "locky_broker_connections_connecting"); got != 50 {
		t.Errorf("connections still before CONNECT: %v; want 50", got)
	}
	// Close ends the 50 left (mochi alone would wait for them forever).
	b.Close()
	awaitN(t, ended, 50, "idle connections within the cap closed by Close")
}

func TestConnectDeadlineClosesIdleAndSlowClients(t *testing.T) {
	b, set := startLimited(t, Config{ConnectTimeout: 300 * time.Millisecond, MaxPerAddr: 1000})
	// Connected before the attack, with no keepalive: its CONNECT must have
	// lifted the deadline.
	early := mustLimConnect(t, b.Addr(), "")

	// A slow loris: a valid CONNECT, one byte at a time, each well within
	// the timeout of the previous one.
	loris := rawDial(t, b.Addr(), "")
	awaitMetric(t, set, "locky_broker_connections_connecting", 1) // accepted: its deadline runs
	dribbled := make(chan int, 1)
	go func() {
		cp := connectPacket(4, strings.Repeat("x", 60), "", "")
		tick := time.NewTicker(50 * time.Millisecond) // pace, no wait
		defer tick.Stop()
		for i, by := range cp {
			<-tick.C
			if _, err := loris.c.Write([]byte{by}); err != nil {
				dribbled <- i
				return
			}
		}
		dribbled <- len(cp)
	}()
	loris.expectClosed(t, "slow loris")
	if n := <-dribbled; n == len(connectPacket(4, strings.Repeat("x", 60), "", "")) {
		t.Errorf("the slow loris delivered its whole CONNECT")
	}

	ended := idleConns(t, b.Addr(), 20)
	awaitN(t, ended, 20, "idle connections closed at the connect deadline")
	awaitMetric(t, set, `locky_broker_connections_refused_total{reason="connect_timeout"}`, 21)

	// More than the timeout has passed since early was accepted.
	ctx, cancel := context.WithTimeout(context.Background(), limWait)
	defer cancel()
	if _, err := early.Publish(ctx, &paho.Publish{Topic: "t/early", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Errorf("a client connected before the deadline was closed: %v", err)
	}
}

func TestConnectionsPerAddressAreCapped(t *testing.T) {
	b, set := startLimited(t, Config{MaxPerAddr: 3})
	for range 3 {
		mustLimConnect(t, b.Addr(), "127.0.0.1")
	}
	c := rawDial(t, b.Addr(), "127.0.0.1")
	c.expectClosed(t, "fourth connection from 127.0.0.1")
	awaitMetric(t, set, `locky_broker_connections_refused_total{reason="max_per_addr"}`, 1)
	mustLimConnect(t, b.Addr(), "127.0.0.2") // another address has its own count
}

func TestClientsPastMaxClientsGetServerBusy(t *testing.T) {
	b, set := startLimited(t, Config{MaxClients: 2, MaxConnecting: 8})
	mustLimConnect(t, b.Addr(), "127.0.0.1")
	mustLimConnect(t, b.Addr(), "127.0.0.2")
	if _, ca := limConnect(t, b.Addr(), "127.0.0.3", paho.ClientConfig{}); ca.ReasonCode != 0x89 {
		t.Errorf("third MQTT 5 client: CONNACK 0x%02x; want 0x89 server busy", ca.ReasonCode)
	}
	if code := rawDial(t, b.Addr(), "127.0.0.4").connack(t, 4, "v3", "", ""); code != 0x03 {
		t.Errorf("third MQTT 3.1.1 client: CONNACK %d; want 3 server unavailable", code)
	}
	awaitMetric(t, set, `locky_broker_connections_refused_total{reason="max_clients"}`, 2)
}

func TestConnectRateIsLimitedPerAddress(t *testing.T) {
	b, set := startLimited(t, Config{ConnectBurst: 3, ConnectEvery: time.Hour})
	for range 3 {
		c := mustLimConnect(t, b.Addr(), "127.0.0.1")
		_ = c.Disconnect(&paho.Disconnect{})
	}
	if _, ca := limConnect(t, b.Addr(), "127.0.0.1", paho.ClientConfig{}); ca.ReasonCode != 0x9f {
		t.Errorf("fourth MQTT 5 connect: CONNACK 0x%02x; want 0x9f connection rate exceeded", ca.ReasonCode)
	}
	if code := rawDial(t, b.Addr(), "127.0.0.1").connack(t, 4, "v3", "", ""); code != 0x03 {
		t.Errorf("fifth connect, MQTT 3.1.1: CONNACK %d; want 3 server unavailable", code)
	}
	mustLimConnect(t, b.Addr(), "127.0.0.3") // another address has its own rate
	awaitMetric(t, set, `locky_broker_connections_refused_total{reason="connect_rate"}`, 2)
}

func TestOversizedPacketGetsDisconnect0x95(t *testing.T) {
	b, set := startLimited(t, Config{})
	_, ca := limConnect(t, b.Addr(), "", paho.ClientConfig{})
	if ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != 256<<10 {
		t.Fatalf("CONNACK properties %+v; want Maximum Packet Size 262144", ca.Properties)
	}

	// An MQTT 5 client announcing a 300 KiB publish gets DISCONNECT 0x95.
	c := rawDial(t, b.Addr(), "")
	if code := c.connack(t, 5, "big5", "", ""); code != 0 {
		t.Fatalf("CONNACK 0x%02x", code)
	}
	c.send(t, append([]byte{0x30}, varint(300<<10)...))
	typ, body, err := c.packet()
	if err != nil || typ != 14 || len(body) < 1 || body[0] != 0x95 {
		t.Errorf("after a 300 KiB publish header: type %d %x, %v; want DISCONNECT 0x95", typ, body, err)
	}
	c.expectClosed(t, "after DISCONNECT 0x95")

	// MQTT 3.1.1 has no DISCONNECT from the server: closed.
	c = rawDial(t, b.Addr(), "")
	if code := c.connack(t, 4, "big4", "", ""); code != 0 {
		t.Fatalf("CONNACK %d", code)
	}
	c.send(t, append([]byte{0x30}, varint(300<<10)...))
	c.expectClosed(t, "MQTT 3.1.1 client after a 300 KiB publish header")
	awaitMetric(t, set, "locky_broker_packets_too_large_total", 2)

	// A real client sending the whole packet is told too.
	got := make(chan byte, 1)
	pc, _ := limConnect(t, b.Addr(), "", paho.ClientConfig{OnServerDisconnect: func(d *paho.Disconnect) { got <- d.ReasonCode }})
	ctx, cancel := context.WithTimeout(context.Background(), limWait)
	defer cancel()
	_, _ = pc.Publish(ctx, &paho.Publish{Topic: "t/big", QoS: 0, Payload: make([]byte, 300<<10)})
	select {
	case code := <-got:
		if code != 0x95 {
			t.Errorf("paho got DISCONNECT 0x%02x; want 0x95", code)
		}
	case <-ctx.Done():
		t.Errorf("paho got no DISCONNECT after a 300 KiB publish")
	}
}

func TestPubackCarriesNoInheritedUserProperties(t *testing.T) {
	b, _ := startLimited(t, Config{})
	c := mustLimConnect(t, b.Addr(), "")
	ctx, cancel := context.WithTimeout(context.Background(), limWait)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: "t/props", QoS: 1, Payload: []byte("x"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "k", Value: "v"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Properties != nil && len(pr.Properties.User) > 0 {
		t.Errorf("PUBACK user properties %v; want none", pr.Properties.User)
	}
}

func TestRetainedTopicsAreCapped(t *testing.T) {
	b, set := startLimited(t, Config{MaxRetained: 3})
	if err := b.Publish("locky/doors/1/state", []byte("closed"), true, 1); err != nil {
		t.Fatal(err)
	}
	c := mustLimConnect(t, b.Addr(), "")
	pub := func(topic, payload string, qos byte) byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), limWait)
		defer cancel()
		pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: true, Payload: []byte(payload)})
		if qos == 0 {
			if err != nil {
				t.Fatalf("publish %s: %v", topic, err)
			}
			return 0
		}
		if pr == nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
		return pr.ReasonCode
	}
	f := func(topic, payload string, qos, want byte) {
		t.Helper()
		if got := pub(topic, payload, qos); got != want {
			t.Errorf("retained %q on %s: PUBACK 0x%02x; want 0x%02x", payload, topic, got, want)
		}
	}
	f("locky/doors/11/state", "1", 1, 0)
	f("locky/doors/12/state", "1", 1, 0)    // three retained: the cap
	f("locky/doors/13/state", "1", 1, 0x97) // a new topic: quota exceeded
	f("locky/doors/11/state", "2", 1, 0)    // a replacement
	f("locky/doors/14/state", "1", 0, 0)    // QoS 0: dropped
	if err := b.Publish("locky/doors/2/state", []byte("closed"), true, 1); err != nil {
		t.Errorf("the gateway's own retained message was refused: %v", err)
	}
	f("locky/doors/11/state", "", 1, 0) // deletions free room
	f("locky/doors/12/state", "", 1, 0)
	f("locky/doors/13/state", "1", 1, 0)
	awaitMetric(t, set, "locky_broker_retained_refused_total", 2)
	retained := func(topic string, want bool) {
		t.Helper()
		if _, ok := b.srv.Topics.Retained.Get(topic); ok != want {
			t.Errorf("%s retained: %v; want %v", topic, ok, want)
		}
	}
	retained("locky/doors/13/state", true)
	retained("locky/doors/14/state", false)
	retained("locky/doors/2/state", true)

	// MQTT 3.1.1 cannot refuse a QoS 1 publish: the client is disconnected.
	raw := rawDial(t, b.Addr(), "")
	if code := raw.connack(t, 4, "v3-retain", "", ""); code != 0 {
		t.Fatalf("CONNACK %d", code)
	}
	raw.send(t, publishPacket(4, "locky/doors/15/state", []byte("1"), 1, true))
	raw.expectClosed(t, "MQTT 3.1.1 retained publish past the cap")
	awaitMetric(t, set, "locky_broker_retained_refused_total", 3)
}

func TestFrameWatch(t *testing.T) {
	f := func(max uint32, chunks [][]byte, want bool) {
		t.Helper()
		w := frameWatch{max: max}
		got := false
		for _, c := range chunks {
			got = got || w.tooLarge(c)
		}
		if got != want {
			t.Errorf("max %d, chunks %x: too large %v; want %v", max, chunks, got, want)
		}
	}
	small := publishPacket(5, "t", []byte("hello"), 1, false)
	big := append([]byte{0x30}, varint(300<<10)...)
	f(256<<10, [][]byte{small, small, big}, true)
	f(256<<10, [][]byte{small, big[:2], big[2:]}, true)             // a header split across reads
	f(256<<10, [][]byte{small[:3], small[3:], {0xc0, 0x00}}, false) // a body split, then PINGREQ
	// mochi's rule counts the type byte but not the length bytes.
	f(uint32(len(small)-1), [][]byte{small}, false)
	f(uint32(len(small)-2), [][]byte{small}, true)
	f(256<<10, [][]byte{append([]byte{0x30}, varint(200<<10)...), make([]byte, 200<<10), big}, true) // a large body skipped
	f(0, [][]byte{big}, false)                                                                       // no maximum
}
