package gateway_test

// Attacks on the local broker's auth, each against a real gateway over MQTT:
// Wills on topics the role may not publish, client ids and sessions of other
// users, and password guessing.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/handlers/contract"
)

// Reason codes of a refused CONNECT (MQTT 5).
const (
	rcClientIDNotValid   = 0x85
	rcBadPassword        = 0x86
	rcNotAuthorized      = 0x87
	rcConnectionRateHigh = 0x9f
)

// lockerUsers are the users of the attacked locker: name, role; each one's
// password is its name reversed.
var lockerUsers = [][2]string{
	{"kiosk", "screen"}, {"door3", "door:3"}, {"board", "doors"},
	{"bridge", "backend"}, {"ops", "observer"}, {"root", "admin"},
}

func passwordOf(name string) string {
	b := []byte(name)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b) + "-pw"
}

// startSecuredGateway starts a production-mode gateway (no anonymous
// clients) with lockerUsers in its users file.
func startSecuredGateway(t *testing.T) *testGateway {
	t.Helper()
	cfg := testConfig(t)
	cfg.Dev = false
	cfg.CodeKey = strings.Repeat("5a", 32)
	cfg.MQTTUsers = writeUsersFile(t)
	return startGateway(t, cfg)
}

// writeUsersFile writes lockerUsers as `locky-gateway passwd` would, with
// cheap hash costs to keep the tests fast.
func writeUsersFile(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, u := range lockerUsers {
		h, err := broker.HashPassword(passwordOf(u[0]), broker.Argon2Params{Memory: 64, Time: 1, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, broker.User{Name: u[0], Role: u[1], PasswordHash: h}.Line())
	}
	path := filepath.Join(t.TempDir(), "mqtt-users")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAttackWillOnAForbiddenTopic: a screen user's Will opening a door or
// replacing a parcel's codes, and a door board's retained Will on another
// door, are refused at CONNECT; nothing of them ever reaches the locker,
// while a Will the role may leave still works.
func TestAttackWillOnAForbiddenTopic(t *testing.T) {
	g := startSecuredGateway(t)
	root := mqttConnect(t, g, "root", mqttOpts{subscribe: "locky/#"})
	root.mustAck(t, "reservations", reservation("m-1", "R1", 1, 4, "400001", "400002", "400003"))
	kiosk := mqttConnect(t, g, "kiosk", mqttOpts{})
	kiosk.publish(t, contract.TopicScreenCode, contract.CodeRequest{Code: "400001", RequestID: "dep"})
	root.await(t, contract.TopicScreenDisplay, `"dep"`, `"opened"`)
	g.SimDoor(t, 4, "close")
	root.await(t, contract.TopicEvents, contract.EventStored, `"R1"`)

	f := func(user, topic string, payload any, retain bool) {
		t.Helper()
		p, err := json.Marshal(payload)
		if err != nil {
			t.Fatal(err)
		}
		will := &paho.WillMessage{Topic: topic, Payload: p, QoS: 1, Retain: retain}
		c, ca := mqttTry(t, g, user, mqttOpts{will: will})
		if c != nil {
			c.drop() // what the attacker did: the Will goes out, unless refused
		}
		if ca == nil || ca.ReasonCode != rcNotAuthorized {
			t.Errorf("%s with a Will on %s: connack %+v; want reason %#x not authorized", user, topic, ca, rcNotAuthorized)
		}
	}
	f("kiosk", contract.TopicDownCommands, contract.Command{MsgID: "w-1", Command: contract.CommandOpenDoor, Door: 7, Reason: "will"}, false)
	stolen := reservation("w-2", "R1", 999999, 4, "400001", "666666", "400003")
	stolen.Reservation.Status = contract.StatusStored
	f("kiosk", contract.TopicDownPrefix+"reservations", stolen, false)
	f("door3", contract.DoorStateTopic(5), contract.DoorState{State: contract.DoorOpen, At: time.Now().UTC()}, true)

	// A Will the kiosk may leave goes out when its connection drops; it is
	// answered after anything the refused ones could have started.
	will, _ := json.Marshal(contract.CodeRequest{Code: "000000", RequestID: "will-ok"})
	c := mqttConnect(t, g, "kiosk", mqttOpts{will: &paho.WillMessage{Topic: contract.TopicScreenCode, Payload: will, QoS: 1}})
	c.drop()
	root.await(t, contract.TopicScreenDisplay, `"will-ok"`, `"invalid_code"`)

	kiosk.publish(t, contract.TopicScreenCode, contract.CodeRequest{Code: "666666", RequestID: "thief"})
	root.await(t, contract.TopicScreenDisplay, `"thief"`, `"invalid_code"`)
	if got := statusOf(t, g, "R1"); got != contract.StatusStored {
		t.Errorf("R1 is %s; want stored", got)
	}
	for _, m := range root.received() {
		switch {
		case m.topic == contract.DoorCommandTopic(7),
			m.topic == contract.TopicEvents && (strings.Contains(m.payload, contract.EventRemoteOpen) || strings.Contains(m.payload, contract.EventForcedOpen)),
			m.topic == contract.TopicAcks && strings.Contains(m.payload, `"w-`),
			m.topic == contract.DoorStateTopic(5) && strings.Contains(m.payload, `"open"`):
			t.Errorf("a refused Will reached the locker: %s %s", m.topic, m.payload)
		}
	}
	// No retained state of door 5 from the board of door 3: a new subscriber
	// gets the simulator's.
	late := mqttConnect(t, g, "root", mqttOpts{subscribe: contract.DoorStateTopic(5)})
	if p := late.await(t, contract.DoorStateTopic(5)); strings.Contains(p, `"open"`) {
		t.Errorf("door 5's retained state %s; want the simulator's closed", p)
	}
}

// TestAttackWillMatrix tries every role's Will on every topic and filter it
// must not publish to: each is refused with "not authorized"; each it may is
// accepted.
func TestAttackWillMatrix(t *testing.T) {
	g := startSecuredGateway(t)
	topics := []string{
		"locky/screen/code", "locky/screen/display", "locky/doors/3/command", "locky/doors/3/state",
		"locky/doors/5/command", "locky/doors/5/state", "locky/down/reservations", "locky/down/commands",
		"locky/down/doors", "locky/down/partners", "locky/down/users", "locky/down/sync",
		"locky/up/acks", "locky/up/events", "locky/up/snapshot", "locky/x", "other", "$SYS/x",
		"#", "locky/#", "locky/doors/+/state", "locky/doors/3/#", "locky/down/+", "locky/down/#", "+/screen/code",
	}
	may := map[string]func(string) bool{
		"screen": func(s string) bool { return s == "locky/screen/code" },
		"door:3": func(s string) bool { return s == "locky/doors/3/state" },
		"doors":  func(s string) bool { return s == "locky/doors/3/state" || s == "locky/doors/5/state" },
		"backend": func(s string) bool {
			return strings.HasPrefix(s, "locky/down/") && !strings.ContainsAny(s, "+#")
		},
		"observer": func(string) bool { return false },
		"admin":    func(s string) bool { return !strings.ContainsAny(s, "+#") },
	}
	for _, u := range lockerUsers {
		for _, topic := range topics {
			will := &paho.WillMessage{Topic: topic, Payload: []byte(`{}`), QoS: 1, Retain: true}
			c, ca := mqttTry(t, g, u[0], mqttOpts{will: will})
			// Retained: only a door state may be.
			want := may[u[1]](topic) && (topic == "locky/doors/3/state" || topic == "locky/doors/5/state")
			switch {
			case want && c == nil:
				t.Errorf("%s (%s) Will on %s: connack %+v; want accepted", u[0], u[1], topic, ca)
			case !want && (ca == nil || ca.ReasonCode != rcNotAuthorized):
				t.Errorf("%s (%s) Will on %s: connack %+v; want reason %#x", u[0], u[1], topic, ca, rcNotAuthorized)
			}
			if c != nil {
				c.disconnect(t) // a clean DISCONNECT: the Will is not sent
			}
		}
	}
}

// TestAttackClientIDTakeover: a door board cannot kick the kiosk off with
// its client id, nor take the observer's kept session with its queued
// messages, nor use the gateway's own client ids.
func TestAttackClientIDTakeover(t *testing.T) {
	g := startSecuredGateway(t)
	kiosk := mqttConnect(t, g, "kiosk", mqttOpts{id: "kiosk", subscribe: contract.TopicScreenDisplay})
	ops := mqttConnect(t, g, "ops", mqttOpts{id: "ops", keep: true, subscribe: contract.TopicScreenDisplay})
	ops.disconnect(t)

	refused := func(user, id string) {
		t.Helper()
		c, ca := mqttTry(t, g, user, mqttOpts{id: id, keep: true})
		if c != nil {
			c.disconnect(t)
		}
		if ca == nil || ca.ReasonCode != rcClientIDNotValid {
			t.Errorf("%s as client %q: connack %+v; want reason %#x", user, id, ca, rcClientIDNotValid)
		}
	}
	refused("door3", "kiosk")
	refused("door3", "ops")
	refused("root", "ops") // even an admin may not resume another user's session
	refused("door3", "inline")
	refused("root", "inline")
	refused("root", "locky-gateway")

	// The kiosk is still on, and the observer's session kept what it missed.
	kiosk.publish(t, contract.TopicScreenCode, contract.CodeRequest{Code: "000000", RequestID: "still-here"})
	kiosk.await(t, contract.TopicScreenDisplay, `"still-here"`)
	back, ca := mqttTry(t, g, "ops", mqttOpts{id: "ops", keep: true})
	if back == nil || !ca.SessionPresent {
		t.Fatalf("ops resuming its session: connack %+v; want session present", ca)
	}
	back.await(t, contract.TopicScreenDisplay, `"still-here"`)
}

// TestAttackPasswordGuessing: wrong passwords from one address block that
// address, the right password included, without blocking the kiosk from its
// own address or others.
func TestAttackPasswordGuessing(t *testing.T) {
	g := startSecuredGateway(t)
	const attacker, kioskHost = "127.30.0.1", "127.30.0.2"
	mqttConnect(t, g, "kiosk", mqttOpts{from: kioskHost}).disconnect(t)
	try := func(user, pw, from string, want byte) {
		t.Helper()
		c, ca := mqttTry(t, g, user, mqttOpts{pw: pw, from: from})
		if c != nil {
			c.disconnect(t)
		}
		if got := byte(0xff); ca != nil {
			got = ca.ReasonCode
			if got != want {
				t.Errorf("%s/%s from %s: reason %#x; want %#x", user, pw, from, got, want)
			}
		} else {
			t.Errorf("%s/%s from %s: no CONNACK; want reason %#x", user, pw, from, want)
		}
	}
	for i := range 5 {
		try("kiosk", fmt.Sprintf("guess-%d", i), attacker, rcBadPassword)
	}
	try("kiosk", passwordOf("kiosk"), attacker, rcConnectionRateHigh) // blocked, right password or not
	try("door3", passwordOf("door3"), attacker, rcConnectionRateHigh)
	try("kiosk", passwordOf("kiosk"), "127.30.0.3", 0) // another address is not blocked

	// A guesser on the kiosk's own host blocks it for others, not for the
	// kiosk, which has logged in from there.
	for i := range 5 {
		try("nobody", fmt.Sprintf("guess-%d", i), kioskHost, rcBadPassword)
	}
	try("door3", passwordOf("door3"), kioskHost, rcConnectionRateHigh)
	try("kiosk", passwordOf("kiosk"), kioskHost, 0)

	m := readMetrics(t, g)
	if v := m[`locky_broker_auth_failures_total{reason="password"}`]; v != 5 {
		t.Errorf("wrong passwords counted %v; want 5", v)
	}
	if v := m[`locky_broker_auth_failures_total{reason="unknown_user"}`]; v != 5 {
		t.Errorf("unknown users counted %v; want 5", v)
	}
	if v := m[`locky_broker_auth_failures_total{reason="throttled"}`]; v != 3 {
		t.Errorf("throttled logins counted %v; want 3", v)
	}
}

// --- an MQTT 5 client with credentials, a Will and a kept session

type mqttOpts struct {
	pw        string // empty means the user's password
	id        string // empty means a fresh id of the user's
	from      string // local address; empty means a fresh one of 127.0.0.0/8
	will      *paho.WillMessage
	keep      bool // keep the session for 10 minutes (CleanStart false)
	subscribe string
}

type mqttMessage struct{ topic, payload string }

type mqttClient struct {
	c    *paho.Client
	conn net.Conn
	once sync.Once // paho's Disconnect must not be called twice

	mu  sync.Mutex
	in  []mqttMessage
	new chan struct{}
}

var mqttSeq atomic.Int64

// mqttTry connects as user with o. It returns the client if the gateway
// accepted it, and the CONNACK if there was one.
func mqttTry(t *testing.T, g *testGateway, user string, o mqttOpts) (*mqttClient, *paho.Connack) {
	t.Helper()
	n := mqttSeq.Add(1)
	if o.pw == "" {
		o.pw = passwordOf(user)
	}
	if o.id == "" {
		o.id = fmt.Sprintf("%s-%d", user, n)
	}
	if o.from == "" { // a fresh address: the tests' many connects meet no per-address limit
		o.from = fmt.Sprintf("127.40.%d.%d", n/250%250, n%250+1)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(o.from)}}
	conn, err := d.Dial("tcp", g.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	c := &mqttClient{conn: conn, new: make(chan struct{}, 1)}
	c.c = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.in = append(c.in, mqttMessage{pr.Packet.Topic, string(pr.Packet.Payload)})
			c.mu.Unlock()
			select {
			case c.new <- struct{}{}:
			default:
			}
			return true, nil
		},
	}})
	cp := &paho.Connect{ClientID: o.id, CleanStart: !o.keep, KeepAlive: 30, WillMessage: o.will,
		Username: user, UsernameFlag: true, Password: []byte(o.pw), PasswordFlag: true}
	if o.keep {
		expiry := uint32(600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ca, err := c.c.Connect(ctx, cp)
	if err != nil || ca.ReasonCode != 0 {
		if ca == nil {
			t.Logf("connect %s: %v", user, err)
		}
		return nil, ca
	}
	t.Cleanup(func() { c.once.Do(func() { _ = c.c.Disconnect(&paho.Disconnect{}) }) })
	if o.subscribe != "" {
		sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: o.subscribe, QoS: 1}}})
		if err != nil || sa.Reasons[0] >= 0x80 {
			t.Fatalf("%s subscribe %s: %v %+v", user, o.subscribe, err, sa)
		}
	}
	return c, ca
}

func mqttConnect(t *testing.T, g *testGateway, user string, o mqttOpts) *mqttClient {
	t.Helper()
	c, ca := mqttTry(t, g, user, o)
	if c == nil {
		t.Fatalf("%s cannot connect: connack %+v", user, ca)
	}
	return c
}

func (c *mqttClient) publish(t *testing.T, topic string, v any) {
	t.Helper()
	p, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: p}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func (c *mqttClient) mustAck(t *testing.T, entity string, m contract.DownMessage) {
	t.Helper()
	c.publish(t, contract.TopicDownPrefix+entity, m)
	if p := c.await(t, contract.TopicAcks, `"`+m.MsgID+`"`); !strings.Contains(p, `"ok":true`) {
		t.Fatalf("%s %s: ack %s; want ok", entity, m.MsgID, p)
	}
}

func (c *mqttClient) received() []mqttMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]mqttMessage(nil), c.in...)
}

// await returns the payload of the first message on topic containing every
// one of parts.
func (c *mqttClient) await(t *testing.T, topic string, parts ...string) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		for _, m := range c.received() {
			ok := m.topic == topic
			for _, p := range parts {
				ok = ok && strings.Contains(m.payload, p)
			}
			if ok {
				return m.payload
			}
		}
		select {
		case <-c.new:
		case <-deadline:
			var seen bytes.Buffer
			for _, m := range c.received() {
				fmt.Fprintf(&seen, "%s %.200s\n", m.topic, m.payload)
			}
			t.Fatalf("no message on %s with %q; received:\n%s", topic, parts, seen.String())
		}
	}
}

func (c *mqttClient) disconnect(t *testing.T) {
	t.Helper()
	var err error
	c.once.Do(func() { err = c.c.Disconnect(&paho.Disconnect{}) })
	if err != nil {
		t.Fatal(err)
	}
	<-c.c.Done()
}

// drop cuts the connection without a DISCONNECT, so the broker sends the Will.
func (c *mqttClient) drop() { c.once.Do(func() { _ = c.conn.Close() }) }
