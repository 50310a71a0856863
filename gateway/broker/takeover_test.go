package broker

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// sessionLog is what any connection of one session received.
type sessionLog struct {
	mu   sync.Mutex
	got  map[int]bool
	mark chan struct{} // closed when the end marker arrives
	once sync.Once
}

// sessionConn is a hand-driven MQTT 3.1.1 connection of a kept session
// (clean session off): it takes a PUBLISH even before the CONNACK, which
// mochi v2.7.9 may send first to a client taking a session over.
type sessionConn struct {
	c       net.Conn
	connack chan byte // the CONNACK's flags
	suback  chan struct{}
}

// connectKept connects the kept session id, acknowledging every message
// and recording it in log.
func connectKept(t *testing.T, addr, id string, log *sessionLog) *sessionConn {
	t.Helper()
	// A fresh address each time: the broker limits the connects of one.
	k := addrSeq.Add(1)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 11, byte(k/250%250), byte(k%250+1))}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sc := &sessionConn{c: c, connack: make(chan byte, 1), suback: make(chan struct{}, 1)}
	go sc.read(log)
	var b bytes.Buffer
	mqttString(&b, "MQTT")
	b.Write([]byte{4, 0x00, 0, 30}) // 3.1.1, clean session off, keepalive 30 s
	mqttString(&b, id)
	if _, err := c.Write(frame(0x10, b.Bytes())); err != nil {
		t.Fatal(err)
	}
	return sc
}

// read handles the broker's packets until the connection closes.
func (sc *sessionConn) read(log *sessionLog) {
	r := bufio.NewReader(sc.c)
	for {
		h, err := r.ReadByte()
		if err != nil {
			return
		}
		n, shift := 0, 0
		for {
			v, err := r.ReadByte()
			if err != nil {
				return
			}
			n |= int(v&0x7f) << shift
			if shift += 7; v&0x80 == 0 {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		switch h >> 4 {
		case 2:
			sc.connack <- body[0]
		case 9:
			sc.suback <- struct{}{}
		case 3:
			tl := int(body[0])<<8 | int(body[1])
			rest := body[2+tl:]
			if h>>1&3 == 0 {
				log.add(string(rest))
				continue
			}
			log.add(string(rest[2:])) // before the PUBACK, which ends the broker's resends
			_, _ = sc.c.Write([]byte{0x40, 2, rest[0], rest[1]})
		}
	}
}

func (l *sessionLog) add(payload string) {
	if payload == "end" {
		l.once.Do(func() { close(l.mark) })
		return
	}
	if n, err := strconv.Atoi(payload); err == nil {
		l.mu.Lock()
		l.got[n] = true
		l.mu.Unlock()
	}
}

// subscribe subscribes at QoS 1 and waits for the SUBACK.
func (sc *sessionConn) subscribe(t *testing.T, filter string) {
	t.Helper()
	var b bytes.Buffer
	b.Write([]byte{0, 1})
	mqttString(&b, filter)
	b.WriteByte(1)
	if _, err := sc.c.Write(frame(0x82, b.Bytes())); err != nil {
		t.Fatal(err)
	}
	await(t, sc.suback, "SUBACK")
}

// await returns the next value of ch; waitLimit only guards against a hang.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %s", what, waitLimit)
		panic("unreachable")
	}
}

// TestTakeoverLosesNoMessage publishes to a kept session while its client
// reconnects again and again, each connection taking the session over from
// the one before: every message reaches one connection or another.
func TestTakeoverLosesNoMessage(t *testing.T) {
	b := startBroker(t, Config{AllowAnonymous: true})
	const topic, id, n = "locky/up/events", "watcher", 3000
	log := &sessionLog{got: map[int]bool{}, mark: make(chan struct{})}
	last := connectKept(t, b.addr, id, log)
	await(t, last.connack, "CONNACK")
	last.subscribe(t, topic)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range n {
			if err := b.Publish(topic, []byte(strconv.Itoa(i)), false, 1); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	takeovers := 0
	for done := false; !done; takeovers++ {
		select {
		case <-published:
			done = true
		default:
		}
		last = connectKept(t, b.addr, id, log)
		if flags := await(t, last.connack, "CONNACK"); flags&1 == 0 {
			t.Fatalf("takeover %d: no session present", takeovers)
		}
	}
	// The SUBACK comes after mochi resent the session's messages to the
	// last connection: the end marker cannot overtake them.
	last.subscribe(t, topic)
	if err := b.Publish(topic, []byte("end"), false, 1); err != nil {
		t.Fatal(err)
	}
	await(t, log.mark, "end marker")
	log.mu.Lock()
	defer log.mu.Unlock()
	var lost []int
	for i := range n {
		if !log.got[i] {
			lost = append(lost, i)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d messages lost in %d takeovers: %v", len(lost), n, takeovers, lost)
	}
	t.Logf("%d takeovers", takeovers)
}
