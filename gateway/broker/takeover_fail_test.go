package broker

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"
)

// dialFresh dials addr from a fresh local address: the broker limits the
// connects of one.
func dialFresh(t *testing.T, addr string) net.Conn {
	t.Helper()
	k := addrSeq.Add(1)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 13, byte(k/250%250), byte(k%250+1))}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// failTakeover takes the session id over with an MQTT 5 client whose
// Maximum Packet Size (100) is below the session's stored 500-byte message:
// mochi's resend fails, and the takeover ends after OnSessionEstablish but
// before OnSessionEstablished. It returns once the broker closed the
// connection.
func failTakeover(t *testing.T, addr, id string) {
	t.Helper()
	c := dialFresh(t, addr)
	var b bytes.Buffer
	mqttString(&b, "MQTT")
	b.Write([]byte{5, 0x00, 0, 30}) // MQTT 5, clean start off, keepalive 30 s
	// Properties: session expiry 3600 s, maximum packet size 100.
	b.Write([]byte{10, 0x11, 0, 0, 0x0e, 0x10, 0x27, 0, 0, 0, 100})
	mqttString(&b, id)
	if _, err := c.Write(frame(0x10, b.Bytes())); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, c)
}

// keepUnacked connects the kept session id (MQTT 3.1.1), subscribes it to
// topic at QoS 1, stores a 500-byte message in it and never acknowledges.
func keepUnacked(t *testing.T, b *testBroker, id, topic string) {
	t.Helper()
	a := dialFresh(t, b.addr)
	var cb bytes.Buffer
	mqttString(&cb, "MQTT")
	cb.Write([]byte{4, 0x00, 0, 30})
	mqttString(&cb, id)
	var sb bytes.Buffer
	sb.Write([]byte{0, 1})
	mqttString(&sb, topic)
	sb.WriteByte(1)
	if _, err := a.Write(append(frame(0x10, cb.Bytes()), frame(0x82, sb.Bytes())...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a, make([]byte, 4+5)); err != nil { // CONNACK, SUBACK
		t.Fatalf("read CONNACK and SUBACK: %v", err)
	}
	if err := b.Publish(topic, bytes.Repeat([]byte("x"), 500), false, 1); err != nil {
		t.Fatal(err)
	}
}

// failTakeoversUnderLoad fails n takeovers of id while messages are
// published to topic, and returns when both are done.
func failTakeoversUnderLoad(t *testing.T, b *testBroker, id, topic string, n int) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = b.Publish(topic, []byte(strconv.Itoa(i)), false, 1)
		}
	}()
	for range n {
		failTakeover(t, b.addr, id)
	}
	close(stop)
	<-done
}

// TestTakeoverFailedHoldsNoMore fails takeover after takeover of a session
// while messages are published to it: a client resuming it then gets no
// more than MaxInflight messages, all the session may hold.
func TestTakeoverFailedHoldsNoMore(t *testing.T) {
	const topic, id, maxInflight = "locky/up/events", "hoarder", 20
	b := startBroker(t, Config{AllowAnonymous: true, MaxInflight: maxInflight})
	keepUnacked(t, b, id, topic)
	failTakeoversUnderLoad(t, b, id, topic, 300)
	log := &sessionLog{got: map[int]bool{}, mark: make(chan struct{})}
	last := connectKept(t, b.addr, id, log)
	await(t, last.connack, "CONNACK")
	// The SUBACK follows whatever the broker resent on taking the session.
	last.subscribe(t, topic)
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.got) > maxInflight {
		t.Errorf("the resuming client got %d messages at once, MaxInflight is %d", len(log.got), maxInflight)
	}
}

// TestTakeoverCleanStartInheritsNothing fails takeovers of a session while
// messages are published to it, then starts a new session under its client
// id (MQTT 5 clean start): a client resuming the new session gets none of
// the old one's messages.
func TestTakeoverCleanStartInheritsNothing(t *testing.T) {
	const topic, id = "locky/up/events", "obs-clean"
	b := startBroker(t, Config{AllowAnonymous: true, MaxInflight: 20})
	keepUnacked(t, b, id, topic)
	failTakeoversUnderLoad(t, b, id, topic, 100)

	// MQTT 5, clean start, session expiry 3600 s: a new session, kept.
	c := dialFresh(t, b.addr)
	var cb bytes.Buffer
	mqttString(&cb, "MQTT")
	cb.Write([]byte{5, 0x02, 0, 30})
	cb.Write([]byte{5, 0x11, 0, 0, 0x0e, 0x10})
	mqttString(&cb, id)
	var sb bytes.Buffer
	sb.Write([]byte{0, 1, 0}) // packet id 1, no properties
	mqttString(&sb, topic)
	sb.WriteByte(1)
	if _, err := c.Write(append(frame(0x10, cb.Bytes()), frame(0x82, sb.Bytes())...)); err != nil {
		t.Fatal(err)
	}
	// CONNACK (no properties asked for beyond the broker's own) and SUBACK.
	for got := 0; got < 2; got++ {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(c, hdr); err != nil {
			t.Fatalf("read CONNACK or SUBACK: %v", err)
		}
		if _, err := io.ReadFull(c, make([]byte, hdr[1])); err != nil {
			t.Fatalf("read CONNACK or SUBACK: %v", err)
		}
		if kind := hdr[0] >> 4; kind != 2 && kind != 9 {
			t.Fatalf("the new session got packet type %d before its SUBACK", kind)
		}
	}
	if _, err := c.Write([]byte{0xe0, 0}); err != nil { // DISCONNECT: the session stays
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, c)

	log := &sessionLog{got: map[int]bool{}, mark: make(chan struct{})}
	d := connectKept(t, b.addr, id, log)
	await(t, d.connack, "CONNACK")
	d.subscribe(t, topic) // after whatever the broker resent on taking the session
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.got) > 0 {
		t.Errorf("a session begun with clean start got %d messages published before it began", len(log.got))
	}
}
