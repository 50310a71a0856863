package broker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/eclipse/paho.golang/paho"
)

// The attacks of a security review, each against the real broker.

// A guesser rotating addresses trips the user's limit; the kiosk, at the
// address it logs in from, is not kept out.
func TestGuessersElsewhereDoNotLockTheKioskOut(t *testing.T) {
	clock := newFakeClock()
	b := startBroker(t, Config{Users: []User{testUser(t, "kiosk", "screen", "k")}}, clock.now)
	f := func(o opts, want byte) {
		t.Helper()
		c, ca := tryConnect(t, b, o)
		if ca == nil || ca.ReasonCode != want {
			t.Fatalf("connect %s/%s from %s: connack %+v; want reason %#x", o.user, o.pw, o.from, ca, want)
		}
		if c != nil {
			c.disconnect(t)
		}
	}
	f(opts{user: "kiosk", pw: "k", from: "127.0.0.1"}, 0)
	for i := range 30 {
		_, ca := tryConnect(t, b, opts{user: "kiosk", pw: "guess", from: fmt.Sprintf("127.1.%d.%d", i/200, i%200+1)})
		if ca == nil || ca.ReasonCode != 0x86 && ca.ReasonCode != 0x9f {
			t.Fatalf("guess %d: connack %+v; want refused", i, ca)
		}
		f(opts{user: "kiosk", pw: "k", from: "127.0.0.1"}, 0)
	}
	// Guessing from other addresses stays throttled.
	f(opts{user: "kiosk", pw: "k", from: "127.1.9.9"}, 0x9f)
}

// An unknown user is refused at once: it waits for no hash, even with every
// hashing slot taken.
func TestUnknownUsersRunNoHash(t *testing.T) {
	clock := newFakeClock()
	b := startBroker(t, Config{Users: []User{testUser(t, "kiosk", "screen", "k")}}, clock.now)
	for range maxHashing {
		b.auth.hashing <- struct{}{}
	}
	_, ca := tryConnect(t, b, opts{user: "door7-1", pw: "x"})
	for range maxHashing {
		<-b.auth.hashing
	}
	if ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("unknown user: connack %+v; want 0x86 at once", ca)
	}
	if v := b.auth.failures["unknown_user"].Get(); v != 1 {
		t.Errorf("unknown users counted %v; want 1", v)
	}
	if v := b.auth.failures["busy"].Get() + b.auth.failures["password"].Get(); v != 0 {
		t.Errorf("busy and password refusals %v; want 0", v)
	}
}

func TestClientsPerUserAreCapped(t *testing.T) {
	set := metrics.NewSet()
	b := startBroker(t, Config{Metrics: set, Users: []User{
		testUser(t, "door7", "door:7", "d"), testUser(t, "kiosk", "screen", "k"),
	}})
	var ids []string
	for i := range DefaultMaxPerUser {
		o := opts{user: "door7", pw: "d", id: fmt.Sprintf("door7-%d", i)}
		mustConnect(t, b, o)
		ids = append(ids, o.id)
	}
	if _, ca := tryConnect(t, b, opts{user: "door7", pw: "d", id: "door7-x"}); ca == nil || ca.ReasonCode != 0x97 {
		t.Fatalf("client %d of door7: connack %+v; want 0x97", DefaultMaxPerUser+1, ca)
	}
	// Taking over a session of one's own is no further client.
	mustConnect(t, b, opts{user: "door7", pw: "d", id: ids[0]})
	mustConnect(t, b, opts{user: "kiosk", pw: "k"})
	if v := metricValue(t, set, `locky_broker_connections_refused_total{reason="max_per_user"}`); v != 1 {
		t.Errorf("max_per_user refusals %v; want 1", v)
	}
}

func TestSubscriptionsAndTopicsAreCapped(t *testing.T) {
	set := metrics.NewSet()
	b := startBroker(t, Config{Metrics: set, Users: []User{testUser(t, "ops", "admin", "o")}})
	c := mustConnect(t, b, opts{user: "ops", pw: "o"})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	sub := func(filters ...string) []byte {
		t.Helper()
		s := &paho.Subscribe{}
		for _, f := range filters {
			s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		sa, err := c.c.Subscribe(ctx, s)
		if sa == nil {
			t.Fatalf("subscribe: %v", err)
		}
		return sa.Reasons
	}
	var filters []string
	for i := range maxSubscriptions - 1 {
		filters = append(filters, fmt.Sprintf("locky/x/%d", i))
	}
	for i, r := range sub(filters...) {
		if r != 1 {
			t.Fatalf("filter %d: SUBACK %#x; want 1", i, r)
		}
	}
	long := "locky/" + strings.Repeat("x", maxFilterLen)
	got := sub("locky/last", "locky/over", filters[0], long)
	if want := []byte{1, 0x97, 1, 0x8f}; string(got) != string(want) {
		t.Errorf("SUBACK %x; want %x", got, want)
	}
	if n := metricValue(t, set, `locky_broker_subscriptions_refused_total{reason="too_many"}`) +
		metricValue(t, set, `locky_broker_subscriptions_refused_total{reason="filter_too_long"}`); n != 2 {
		t.Errorf("subscriptions refused %v; want 2", n)
	}
	pr, err := c.c.Publish(ctx, &paho.Publish{Topic: long, QoS: 1, Payload: []byte("{}")})
	if pr == nil || pr.ReasonCode != 0x90 {
		t.Errorf("publish on a long topic: %+v %v; want PUBACK 0x90", pr, err)
	}
}

// The pre-CONNECT pool filled from many addresses: a real client still gets in.
func TestIdleSocketsFromManyAddressesDoNotKeepAClientOut(t *testing.T) {
	b, set := startLimited(t, Config{MaxConnecting: 16})
	for i := range 40 {
		dialFrom(t, b.Addr(), fmt.Sprintf("127.2.%d.%d", i/200, i%200+1))
	}
	awaitMetric(t, set, `locky_broker_connections_refused_total{reason="evicted"}`, 24)
	mustLimConnect(t, b.Addr(), "127.0.0.1")
}

// The observer reads door states and events, never a code.
func TestObserverSeesNoCodes(t *testing.T) {
	b := startBroker(t, Config{Users: []User{
		testUser(t, "ops", "observer", "o"), testUser(t, "kiosk", "screen", "k"),
		testUser(t, "bridge", "backend", "b"), testUser(t, "door3", "door:3", "d"),
	}})
	obs := mustConnect(t, b, opts{user: "ops", pw: "o"})
	for _, f := range []string{"locky/#", "locky/down/#", "locky/screen/code", "#"} {
		if obs.may(f, false) {
			t.Errorf("observer subscribed to %s", f)
		}
	}
	for _, f := range []string{"locky/doors/+/state", "locky/doors/+/command", "locky/up/#", "locky/screen/display"} {
		if !obs.may(f, false) {
			t.Errorf("observer refused %s", f)
		}
	}
	mustConnect(t, b, opts{user: "bridge", pw: "b"}).may("locky/down/reservations", true)
	mustConnect(t, b, opts{user: "kiosk", pw: "k"}).may("locky/screen/code", true)
	if err := b.Publish("locky/up/events", []byte("event"), false, 1); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, b, opts{user: "door3", pw: "d"}).may("locky/doors/3/state", true)
	var seen []string
	deadline := time.After(waitLimit)
	for len(seen) < 2 {
		select {
		case p := <-obs.got:
			seen = append(seen, p.Topic)
		case <-deadline:
			t.Fatalf("observer got %v; want a door state and an event", seen)
		}
	}
	for _, topic := range seen {
		if topic != "locky/up/events" && topic != "locky/doors/3/state" {
			t.Errorf("observer got %s", topic)
		}
	}
	select {
	case p := <-obs.got:
		t.Errorf("observer got %s", p.Topic)
	default:
	}
}

// Only door states may be retained by network clients, in a publish or a Will.
func TestOnlyDoorStatesAreRetained(t *testing.T) {
	set := metrics.NewSet()
	b := startBroker(t, Config{Metrics: set, Users: []User{
		testUser(t, "kiosk", "screen", "k"), testUser(t, "bridge", "backend", "b"),
		testUser(t, "door3", "door:3", "d"), testUser(t, "ops", "admin", "o"),
	}})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	f := func(user, pw, topic string, want byte) {
		t.Helper()
		c := mustConnect(t, b, opts{user: user, pw: pw})
		pr, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte("{}")})
		if pr == nil || pr.ReasonCode != want {
			t.Errorf("%s retained on %s: %+v %v; want PUBACK %#x", user, topic, pr, err, want)
		}
	}
	f("kiosk", "k", "locky/screen/code", 0x87)
	f("bridge", "b", "locky/down/commands", 0x87)
	f("ops", "o", "locky/down/reservations", 0x87)
	f("door3", "d", "locky/doors/3/state", 0)
	retained := func(topic string, want bool) {
		t.Helper()
		if _, ok := b.srv.Topics.Retained.Get(topic); ok != want {
			t.Errorf("%s retained: %v; want %v", topic, ok, want)
		}
	}
	retained("locky/screen/code", false)
	retained("locky/down/commands", false)
	retained("locky/down/reservations", false)
	retained("locky/doors/3/state", true)
	will := func(user, pw, topic string, want byte) {
		t.Helper()
		c, ca := tryConnect(t, b, opts{user: user, pw: pw, will: &paho.WillMessage{Topic: topic, Retain: true, QoS: 1, Payload: []byte("{}")}})
		if ca == nil || ca.ReasonCode != want {
			t.Errorf("%s retained Will on %s: connack %+v; want %#x", user, topic, ca, want)
		}
		if c != nil {
			c.disconnect(t)
		}
	}
	will("kiosk", "k", "locky/screen/code", 0x87)
	will("bridge", "b", "locky/down/commands", 0x87)
	will("door3", "d", "locky/doors/3/state", 0)
	if v := metricValue(t, set, `locky_broker_publishes_refused_total{reason="retained_topic"}`); v != 3 {
		t.Errorf("retained publishes refused %v; want 3", v)
	}
}
