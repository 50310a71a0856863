package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	packets5 "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/store/storetest"
)

// waitFor bounds every wait for something to arrive.
const waitFor = 30 * time.Second

// openStore opens a store at path, each of opts changing its configuration
// first; the cleanup closes it and checks the database file.
func openStore(t testing.TB, path string, opts ...func(*store.Config)) *store.Store {
	t.Helper()
	cfg := store.Config{Path: path, CodeKey: make([]byte, 32), Logger: testenv.Logger(t)}
	for _, o := range opts {
		o(&cfg)
	}
	return storetest.Open(t, cfg)
}

func newStore(t testing.TB) *store.Store {
	t.Helper()
	return openStore(t, filepath.Join(t.TempDir(), "db"))
}

// appendEvents commits n events, each in its own transaction as the workflow does.
func appendEvents(t testing.TB, s *store.Store, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		ev := contract.Event{Type: contract.EventStored, Reservation: "R" + strconv.Itoa(i), Door: 1 + i%12, Status: contract.StatusStored}
		if _, _, err := s.AppendEvent(time.Now(), ev, nil); err != nil {
			t.Errorf("append event: %s", err)
			return
		}
	}
}

// local is the locker's broker: a real embedded mochi server whose inline
// subscriber on locky/down/# records what arrives, like the store handlers.
type local struct {
	*mqtt.Server
	got chan string // "topic payload"

	mu        sync.Mutex
	failNext  int    // fail this many Deliver calls on locky/down/...
	unhandled string // Deliver answers "no handler" to topics with this prefix
	attempts  map[string]int
}

func newLocal(t testing.TB) *local {
	t.Helper()
	srv := testenv.StartMochi(t)
	l := &local{Server: srv, got: make(chan string, 1000), attempts: map[string]int{}}
	err := srv.Subscribe("locky/down/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		l.got <- pk.TopicName + " " + string(pk.Payload)
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Deliver fails the first failNext downstream messages, then publishes them
// (mochi calls the inline subscriber before Publish returns).
func (l *local) Deliver(topic string, payload []byte, qos byte) error {
	l.mu.Lock()
	l.attempts[string(payload)]++
	if l.unhandled != "" && strings.HasPrefix(topic, l.unhandled) {
		l.mu.Unlock()
		return noHandler{}
	}
	fail := l.failNext > 0 && strings.HasPrefix(topic, "locky/down/")
	if fail {
		l.failNext--
	}
	l.mu.Unlock()
	if fail {
		return errors.New("local broker refused the message (test)")
	}
	return l.Server.Publish(topic, payload, false, qos)
}

// noHandler is the locker's broker's answer when no handler takes a topic.
type noHandler struct{}

func (noHandler) Error() string   { return "no handler of the locker subscribes to this topic" }
func (noHandler) Unhandled() bool { return true }

func (l *local) attemptsOf(payload string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.attempts[payload]
}

// expectLocal waits for each of want ("topic payload") to arrive locally.
func (l *local) expect(t testing.TB, want ...string) {
	t.Helper()
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	deadline := time.After(waitFor)
	for len(missing) > 0 {
		select {
		case got := <-l.got:
			delete(missing, got)
		case <-deadline:
			t.Fatalf("downstream messages missing locally after %s: %v", waitFor, missing)
		}
	}
}

// cloudClient is a test client of the cloud broker with a persistent session
// that reconnects by itself, like the back-end.
type cloudClient struct {
	t       testing.TB
	addr    string
	connect *paho.Connect
	subs    []paho.SubscribeOptions
	got     chan *paho.Publish
	up      chan *paho.Client // the client of each connection, once subscribed

	mu  sync.Mutex
	cli *paho.Client
}

func newCloudClient(t testing.TB, brokerURL, id, user, pass string, filters ...string) *cloudClient {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	expiry := uint32(3600)
	c := &cloudClient{
		t: t, addr: u.Host, got: make(chan *paho.Publish, 100000), up: make(chan *paho.Client, 1),
		connect: &paho.Connect{ClientID: id, KeepAlive: 10, CleanStart: true,
			Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != "",
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}},
	}
	for _, f := range filters {
		c.subs = append(c.subs, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-c.up:
	case <-time.After(waitFor):
		t.Fatalf("cloud client %s cannot connect to %s", id, brokerURL)
	}
	return c
}

// run keeps the client connected until ctx is done.
func (c *cloudClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		if cli := c.connectOnce(ctx); cli != nil {
			select {
			case <-cli.Done():
			case <-ctx.Done():
				_ = cli.Disconnect(&paho.Disconnect{})
				<-cli.Done()
				return
			}
			c.connect.CleanStart = false
		}
		select {
		case <-time.After(20 * time.Millisecond): // reconnect pause
		case <-ctx.Done():
		}
	}
}

func (c *cloudClient) connectOnce(ctx context.Context) *paho.Client {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil
	}
	cli := paho.NewClient(paho.ClientConfig{
		Conn: packets5.NewThreadSafeConn(nc),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.got <- pr.Packet
			return true, nil
		}},
	})
	if _, err := cli.Connect(ctx, c.connect); err != nil {
		return nil
	}
	if len(c.subs) > 0 {
		sa, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: c.subs})
		if err != nil || sa.Reasons[0] >= 0x80 {
			_ = cli.Disconnect(&paho.Disconnect{})
			return nil
		}
	}
	c.mu.Lock()
	c.cli = cli
	c.mu.Unlock()
	select {
	case c.up <- cli:
	default:
	}
	return cli
}

// awaitReconnect waits until the client has connected and subscribed again
// (or has done so since the last wait).
func (c *cloudClient) awaitReconnect(t testing.TB) {
	t.Helper()
	select {
	case <-c.up:
	case <-time.After(waitFor):
		t.Fatalf("cloud client %s did not reconnect to %s", c.connect.ClientID, c.addr)
	}
}

func (c *cloudClient) client() *paho.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cli
}

func (c *cloudClient) publish(t testing.TB, topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for {
		_, err := c.client().Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("publish %s: %s", topic, err)
		}
		time.Sleep(10 * time.Millisecond) // the client reconnects: try again
	}
}

// expectEvents reads events until it has seen event ids 1..n (outbox
// sequences from first on), checking that each new one is the next in order:
// duplicates are allowed, gaps and reordering are not.
func (c *cloudClient) expectEvents(t testing.TB, topic string, first uint64, n int) {
	t.Helper()
	next := first
	dups := 0
	deadline := time.After(waitFor)
	for next < first+uint64(n) {
		select {
		case p := <-c.got:
			if p.Topic != topic {
				continue
			}
			var ev contract.Event
			if err := json.Unmarshal(p.Payload, &ev); err != nil {
				t.Fatalf("bad event %q: %s", p.Payload, err)
			}
			id, err := strconv.ParseUint(ev.EventID, 10, 64)
			if err != nil {
				t.Fatalf("bad event id %q", ev.EventID)
			}
			switch {
			case id < next:
				dups++
			case id == next:
				next++
			default:
				t.Fatalf("event %d arrived before %d: lost or out of order", id, next)
			}
		case <-deadline:
			t.Fatalf("after %s only events %d..%d of %d..%d arrived", waitFor, first, next-1, first, first+uint64(n)-1)
		}
	}
	t.Logf("%d events arrived in order (%d duplicates)", n, dups)
}

// expectPayload waits for a message on topic whose payload contains want.
func (c *cloudClient) expectPayload(t testing.TB, topic, want string) *paho.Publish {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case p := <-c.got:
			if p.Topic == topic && bytes.Contains(p.Payload, []byte(want)) {
				return p
			}
		case <-deadline:
			t.Fatalf("no message on %s containing %s after %s", topic, want, waitFor)
		}
	}
}

// startBridge creates a bridge for locker id at brokerURL and runs it until
// the test ends.
func startBridge(t testing.TB, cfg Config) *Bridge {
	t.Helper()
	if cfg.LockerID == "" {
		cfg.LockerID = "L1"
	}
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.ConnectTimeout = 5 * time.Second
	cfg.LogEvery = time.Second
	cfg.Version = "test"
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger(t)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %s", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %s", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %s", err)
		}
	})
	return b
}

// waitUntil polls cond until it holds, failing the test after waitFor.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: still not %s", waitFor, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// metricValue reads one metric of the set from its text exposition.
func metricValue(t testing.TB, s *metrics.Set, name string) float64 {
	t.Helper()
	v, ok := testenv.SetMetrics(t, s)[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return v
}

func eventTopic(id string) string { return fmt.Sprintf("lockers/%s/up/events", id) }

func bytesContains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }

// outboxEmpty reports whether the outbox holds nothing (cheaply: its stats
// walk the whole bucket).
func outboxEmpty(s *store.Store) func() bool {
	return func() bool {
		msgs, err := s.OutboxAfter(0, 1)
		return err == nil && len(msgs) == 0
	}
}
