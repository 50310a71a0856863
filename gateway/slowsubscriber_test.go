package gateway_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

// A subscriber of locky/# at QoS 1 that never reads, while another client
// floods the screen topic with large messages, costs the locker nothing: the
// back-end's upsert is acked, a valid code is answered and opens its door.
func TestStuckSubscriberDoesNotFreezeTheLocker(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	stuckSubscriber(t, g.MQTTAddr(), "locky/#")

	flooder := connect(t, g.MQTTAddr())
	big := []byte(`{"code":"x","pad":"` + strings.Repeat("A", 60000) + `"}`)
	for range 500 {
		flooder.PublishWith(&paho.Publish{Topic: contract.TopicScreenCode, Payload: big})
	}

	c.MustAck("reservations", reservation("m-1", "R1", 1, 4, "123456", "654321", "777000"))
	c.Code("123456", "r1")
	c.Await(contract.DoorCommandTopic(4), func(p []byte) bool { return strings.Contains(string(p), `"r1"`) })
	if d := c.Display("r1", contract.ResultOpened); d.Door != 4 {
		t.Fatalf("opened door %d; want 4", d.Door)
	}
}

// stuckSubscriber connects over raw TCP with a small receive buffer,
// subscribes to filter at QoS 1 and never reads again.
func stuckSubscriber(t *testing.T, addr, filter string) {
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
	// MQTT 3.1.1 CONNECT, clean session, keepalive 600 s; SUBSCRIBE at QoS 1.
	connect := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0x02, 0x58, 0, byte(len(id))}, id...)
	sub := append(append([]byte{0, 1, 0, byte(len(filter))}, filter...), 1)
	pkt := append(append([]byte{0x10, byte(len(connect))}, connect...), 0x82, byte(len(sub)))
	if _, err := conn.Write(append(pkt, sub...)); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(gatewaytest.WaitLimit)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4+5) // CONNACK, SUBACK
	if _, err := io.ReadFull(conn, ack); err != nil {
		t.Fatal(err)
	}
	if ack[3] != 0 || ack[8] != 1 {
		t.Fatalf("connack and suback % x; want accepted at QoS 1", ack)
	}
}
