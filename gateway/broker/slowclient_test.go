package broker

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/handlers/contract"
)

// stuckSubscriber connects over raw TCP, subscribes to filter at QoS 1 and
// then never reads again, with a socket receive buffer made small.
func stuckSubscriber(t *testing.T, addr, filter string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	id := "stuck"
	var pkt []byte
	// MQTT 3.1.1 CONNECT, clean session, keepalive 600 s.
	connect := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0x02, 0x58, 0, byte(len(id))}, id...)
	pkt = append(pkt, 0x10, byte(len(connect)))
	pkt = append(pkt, connect...)
	sub := append([]byte{0, 1, 0, byte(len(filter))}, filter...)
	sub = append(sub, 1)
	pkt = append(pkt, 0x82, byte(len(sub)))
	pkt = append(pkt, sub...)
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	ack := make([]byte, 4+5) // CONNACK, SUBACK
	if _, err := io.ReadFull(conn, ack); err != nil {
		t.Fatal(err)
	}
	if ack[3] != 0 || ack[8] != 1 {
		t.Fatalf("connack and suback % x; want accepted at QoS 1", ack)
	}
	return conn
}

// A subscriber that stops reading is disconnected; the publishers to its
// topics, and the gateway's own answers, never wait for it.
func TestStuckSubscriberFreezesNoOne(t *testing.T) {
	set := metrics.NewSet()
	b := startBroker(t, Config{AllowAnonymous: true, Metrics: set})
	// A handler as the controller is one: the callback hands the code to
	// its goroutine, which answers on the display topic.
	codes := make(chan string, 1024)
	if err := b.Subscribe(contract.TopicScreenCode, func(m contract.Message) {
		if bytes.Contains(m.Payload, []byte(`"good"`)) {
			codes <- string(m.Payload)
		}
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-codes:
				if err := b.Publish(contract.TopicScreenDisplay, []byte(`{"result":"ok"}`), false, 1); err != nil {
					t.Error(err)
				}
			case <-done:
				return
			}
		}
	}()

	stuckSubscriber(t, b.addr, "locky/#")
	screen := mustConnect(t, b, opts{subscribe: contract.TopicScreenDisplay})
	flooder := mustConnect(t, b, opts{})
	kiosk := mustConnect(t, b, opts{})

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit) // a hang guard only
	defer cancel()
	big := []byte(`{"code":"x","pad":"` + strings.Repeat("A", 60000) + `"}`)
	for i := 0; i < 500; i++ {
		if _, err := flooder.c.Publish(ctx, &paho.Publish{Topic: contract.TopicScreenCode, Payload: big}); err != nil {
			t.Fatalf("flood message %d: %v", i, err)
		}
	}
	// At QoS 1 the PUBACK comes once the broker has delivered the flood.
	if _, err := flooder.c.Publish(ctx, &paho.Publish{Topic: contract.TopicScreenCode, QoS: 1, Payload: []byte(`{"code":"x"}`)}); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	// Twice: a publish to the stuck subscriber may come after the one to
	// the screen, and then blocks the next answer.
	for i := 0; i < 2; i++ {
		if _, err := kiosk.c.Publish(ctx, &paho.Publish{Topic: contract.TopicScreenCode, QoS: 1, Payload: []byte(`{"code":"good"}`)}); err != nil {
			t.Fatalf("valid code %d: %v", i, err)
		}
		if got := screen.await(t, contract.TopicScreenDisplay); got != `{"result":"ok"}` {
			t.Fatalf("display %q; want the answer", got)
		}
	}
	if got := metricValue(t, set, `locky_broker_slow_clients_disconnected_total{reason="queue_full"}`); got < 1 {
		t.Fatalf("slow clients disconnected %v; want at least 1", got)
	}
}
