package gateway_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway"
)

// idleTCP opens n connections to addr that never send a byte and returns a
// channel that gets a value as the gateway closes each one. With spread,
// each comes from its own loopback address (127.0.1.x).
func idleTCP(t *testing.T, addr string, n int, spread bool) <-chan struct{} {
	t.Helper()
	ended := make(chan struct{}, n)
	for i := range n {
		d := net.Dialer{Timeout: waitLimit}
		if spread {
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i%250+1))}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d of %d: %v", i+1, n, err)
		}
		t.Cleanup(func() { c.Close() })
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

func awaitClosed(t *testing.T, ended <-chan struct{}, n int, what string) {
	t.Helper()
	timeout := time.After(waitLimit)
	for i := range n {
		select {
		case <-ended:
		case <-timeout:
			t.Fatalf("%d of %d %s closed after %s", i, n, what, waitLimit)
		}
	}
}

// TestGatewayRefusesIdleConnectionsPastItsCap is the memory attack of the
// issue: 500 TCP connections that never send CONNECT. The deadline is far,
// so exactly as many as pass --mqtt-max-clients are evicted (the oldest
// before their CONNECT); the stop closes the others.
func TestGatewayRefusesIdleConnectionsPastItsCap(t *testing.T) {
	cfg := testConfig(t)
	cfg.MQTTMaxClients = 20
	cfg.MQTTMaxPerAddr = 1000
	cfg.MQTTConnectTimeout = time.Hour
	g := startGateway(t, cfg)
	ended := idleTCP(t, g.MQTTAddr(), 500, false)
	awaitClosed(t, ended, 480, "idle connections evicted")
	awaitSeries(t, g, `locky_broker_connections_refused_total{reason="evicted"}`, "480", equals(480))
	if v := seriesValue(t, g, "locky_broker_connections_connecting"); v != 20 {
		t.Errorf("connections before CONNECT: %v; want 20", v)
	}
	g.Stop(t)
	awaitClosed(t, ended, 20, "idle connections within the cap, at the stop,")
}

// TestGatewayConnectTimeoutAndPerAddressCapFromFlags sets the limits with
// their flags and attacks: a slow loris dribbling a CONNECT and idle
// connections are closed at the deadline, the third connection from one
// address is refused, and clients that connected properly stay.
func TestGatewayConnectTimeoutAndPerAddressCapFromFlags(t *testing.T) {
	cfg, _, err := gateway.ParseArgs([]string{"--mqtt-max-clients=50", "--mqtt-max-per-addr=2",
		"--mqtt-connect-timeout=250ms", "--mqtt-max-retained=5"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTTMaxClients != 50 || cfg.MQTTMaxPerAddr != 2 || cfg.MQTTConnectTimeout != 250*time.Millisecond || cfg.MQTTMaxRetained != 5 {
		t.Fatalf("flags parsed as %d %d %s %d", cfg.MQTTMaxClients, cfg.MQTTMaxPerAddr, cfg.MQTTConnectTimeout, cfg.MQTTMaxRetained)
	}
	base := testConfig(t)
	cfg.DataDir, cfg.MQTTAddr, cfg.HTTPAddr = base.DataDir, base.MQTTAddr, base.HTTPAddr
	g := startGateway(t, cfg)

	client := func(from string) (*paho.Client, error) {
		d := net.Dialer{Timeout: waitLimit, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		conn, err := d.Dial("tcp", g.MQTTAddr())
		if err != nil {
			return nil, err
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: "limits-" + from + "-" + conn.LocalAddr().String(), CleanStart: true}); err != nil {
			conn.Close()
			return nil, err
		}
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		return c, nil
	}
	kept, err := client("127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client("127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	if _, err := client("127.0.0.2"); err == nil {
		t.Errorf("a third client from 127.0.0.2 connected; --mqtt-max-per-addr is 2")
	}
	awaitSeries(t, g, `locky_broker_connections_refused_total{reason="max_per_addr"}`, "1", equals(1))

	loris, err := net.DialTimeout("tcp", g.MQTTAddr(), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loris.Close() })
	awaitSeries(t, g, "locky_broker_connections_connecting", "1", equals(1)) // accepted: its deadline runs
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A valid MQTT 3.1.1 CONNECT with a long client id, a byte each 50 ms.
		id := strings.Repeat("x", 60)
		cp := append([]byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, byte(len(id))}, id...)
		tick := time.NewTicker(50 * time.Millisecond) // pace, no wait
		defer tick.Stop()
		for _, b := range cp {
			<-tick.C
			if _, err := loris.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	if err := loris.SetReadDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	if n, err := loris.Read(make([]byte, 16)); err == nil || n > 0 {
		t.Errorf("the slow loris read %d bytes, %v; want the connection closed without a CONNACK", n, err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("the slow loris is still connected after %s", waitLimit)
	}
	<-done

	ended := idleTCP(t, g.MQTTAddr(), 30, true)
	awaitClosed(t, ended, 30, "idle connections at the connect deadline")
	awaitSeries(t, g, `locky_broker_connections_refused_total{reason="connect_timeout"}`, "31", equals(31))

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := kept.Publish(ctx, &paho.Publish{Topic: "locky/test", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Errorf("a client connected before the attack was dropped: %v", err)
	}
}
