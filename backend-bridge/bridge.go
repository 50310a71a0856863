package bridge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// receiveMaximum bounds the downstream messages the cloud broker may have in
// flight to the locker.
const receiveMaximum = 64

// disconnectWithWill is the DISCONNECT reason code that asks the broker to
// publish the Will anyway: a stopping locker is offline too.
const disconnectWithWill = 0x04

// Bridge links the locker's outbox and local broker to the cloud broker.
type Bridge struct {
	cfg         Config
	log         *slog.Logger
	url         *url.URL
	tls         *tls.Config
	up, down    []route
	statusTopic string
	m           *bridgeMetrics

	linkUp    atomic.Bool
	downSince atomic.Int64 // unix nanoseconds; meaningful while the link is down
	inflight  atomic.Int64
	waiting   atomic.Int64 // downstream messages received, not yet committed locally
	retrying  atomic.Bool  // a downstream message is being retried locally

	connLog, upLog, downLog, outboxLog *throttle

	mu      sync.Mutex
	running bool
	closed  bool
	wg      sync.WaitGroup
	closing context.Context
	stop    context.CancelFunc
}

// New validates cfg, loads the TLS files and creates the metrics. It does not
// connect: Run does. Its errors wrap ErrConfig and name the field or file.
func New(cfg Config) (*Bridge, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	u, tc, err := Endpoint{URL: cfg.URL, CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}.Resolve()
	if err != nil {
		return nil, err
	}
	up, err := compile(cfg.Up, cfg.LockerID, "Up")
	if err != nil {
		return nil, err
	}
	down, err := compile(cfg.Down, cfg.LockerID, "Down")
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "bridge", "cloud", u.Host)
	b := &Bridge{
		cfg: cfg, log: log, url: u, tls: tc, up: up, down: down,
		statusTopic: "lockers/" + cfg.LockerID + "/status",
		connLog:     &throttle{log: log, every: cfg.LogEvery},
		upLog:       &throttle{log: log, every: cfg.LogEvery},
		downLog:     &throttle{log: log, every: cfg.LogEvery},
		outboxLog:   &throttle{log: log, every: cfg.LogEvery},
	}
	b.downSince.Store(time.Now().UnixNano())
	if b.m, err = newMetrics(cfg.Metrics, b); err != nil {
		return nil, err
	}
	b.closing, b.stop = context.WithCancel(context.Background())
	return b, nil
}

// LinkUp reports whether the bridge is connected to the cloud broker now.
func (b *Bridge) LinkUp() bool { return b.linkUp.Load() }

// Run connects to the cloud broker and keeps the link up, reconnecting with
// back-off, until ctx is done or Close is called; then it disconnects (the
// broker publishes the Will: offline) and returns nil. A broker that is
// unreachable or refuses the credentials does not stop it: it logs, counts
// and retries. Run may be called once.
func (b *Bridge) Run(ctx context.Context) error {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return ErrClosed
	case b.running:
		b.mu.Unlock()
		return ErrRunning
	}
	b.running = true
	b.wg.Add(1)
	b.mu.Unlock()
	defer b.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(b.closing, cancel)()

	rm := newRemover(b)
	rmCtx, rmStop := context.WithCancel(context.Background())
	rmDone := make(chan struct{})
	go func() { defer close(rmDone); rm.run(rmCtx) }()
	defer func() { rmStop(); <-rmDone }()

	b.log.Info("cloud bridge starting", "locker", b.cfg.LockerID, "url", b.url.String())
	failures := 0
	for {
		connected := b.connectOnce(ctx, rm)
		if ctx.Err() != nil {
			b.log.Info("cloud bridge stopped")
			return nil
		}
		if connected {
			failures = 0
		} else {
			failures++
		}
		t := time.NewTimer(b.backoff(failures))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			b.log.Info("cloud bridge stopped")
			return nil
		}
	}
}

// Close stops Run and waits for it to return. It is safe to call more than
// once, and before or without Run.
func (b *Bridge) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.stop()
	b.wg.Wait()
	return nil
}

// backoff is the pause after the n-th failure in a row: after a link that
// was up, a random part of RetryMin (a cloud broker's restart drops every
// locker's link at the same moment: their first attempts are spread over
// RetryMin instead of all landing at once), then RetryMin doubling up to
// RetryMax, each a random half to all of it so that a fleet does not
// reconnect in step.
func (b *Bridge) backoff(n int) time.Duration {
	if n <= 0 {
		return rand.N(b.cfg.RetryMin + 1)
	}
	d := b.cfg.RetryMin
	for i := 1; i < n && d < b.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, b.cfg.RetryMax)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// conn is the state of one connection to the cloud broker.
type conn struct {
	mu     sync.Mutex
	lost   error         // why paho saw the connection end
	lostCh chan struct{} // closed once lost is set
}

func (c *conn) setLost(err error) {
	c.mu.Lock()
	if c.lost == nil && err != nil {
		c.lost = err
		close(c.lostCh)
	}
	c.mu.Unlock()
}

// reason returns why paho saw the connection end. paho closes Done before it
// calls OnClientError or OnServerDisconnect (each on a goroutine of its own),
// so reason waits for that call, a second at most.
func (c *conn) reason(ctx context.Context) error {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-c.lostCh:
	case <-t.C:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost == nil {
		return errors.New("the connection ended without an error from the client")
	}
	return c.lost
}

// connectOnce makes one connection attempt and, if it succeeds, serves the
// link until it drops or ctx is done. It reports whether the link came up.
func (b *Bridge) connectOnce(ctx context.Context, rm *remover) bool {
	attempt, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	nc, err := b.dial(attempt)
	if err != nil {
		b.connectFailed(ctx, fmt.Errorf("cannot reach the cloud broker: %w", err))
		return false
	}
	c := &conn{lostCh: make(chan struct{})}
	w := newWindow(b.cfg.Window)
	q := newDownQueue(&b.waiting)
	cli := b.newClient(nc, c, w, q)
	ca, err := cli.Connect(attempt, b.connectPacket())
	if err != nil {
		w.close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			err = refusedError(ca)
		}
		b.connectFailed(ctx, fmt.Errorf("cannot connect to the cloud broker: %w", err))
		return false
	}
	cancel()
	b.serve(ctx, cli, ca, c, w, q, rm)
	return true
}

// newClient returns the paho client of one connection over nc: its session
// is w, what it receives goes to q, and why the link ends goes to c.
func (b *Bridge) newClient(nc net.Conn, c *conn, w *window, q *downQueue) *paho.Client {
	return paho.NewClient(paho.ClientConfig{
		ClientID:                   b.cfg.LockerID,
		Conn:                       packets.NewThreadSafeConn(nc),
		Session:                    w,
		EnableManualAcknowledgment: true,
		OnPublishReceived:          []func(paho.PublishReceived) (bool, error){b.receive(q)},
		OnClientError:              c.setLost,
		OnServerDisconnect: func(d *paho.Disconnect) {
			c.setLost(fmt.Errorf("the cloud broker disconnected us: %s", disconnectReason(d)))
		},
		// Our own contexts bound CONNECT, SUBSCRIBE and the status publish.
		// An outbox publish may wait for room in the broker's receive window
		// as long as the link lives: a slow link is not a dead one, and the
		// keep-alive notices a dead one.
		PacketTimeout: 24 * time.Hour,
	})
}

// serve runs a link that came up (ca is its CONNACK) until it drops or ctx
// is done: it subscribes, publishes the online status, delivers downstream
// and pumps the outbox, then takes the link down and logs why it ended.
func (b *Bridge) serve(ctx context.Context, cli *paho.Client, ca *paho.Connack, c *conn, w *window, q *downQueue, rm *remover) {
	b.m.connects.Inc()
	b.connLog.reset()
	b.log.Info("cloud link up", "session_present", ca.SessionPresent)
	// Subscribed before the online status: a back-end that waits for
	// "online" and then sends must find the subscription there (a new
	// session has none until now). What arrives before deliver starts waits
	// in q.
	b.subscribe(ctx, cli)
	b.publishStatus(ctx, cli, downState{})
	// Started after the online status, so that a retrying status is never
	// overwritten by it.
	delivered := make(chan struct{})
	go func() { defer close(delivered); b.deliver(ctx, cli, q) }()
	b.setLink(true) // connected, subscribed, online published

	err := b.pump(ctx, cli, w, rm)
	_ = cli.Disconnect(&paho.Disconnect{ReasonCode: disconnectWithWill}) // a dead link fails to write: nothing to do
	<-cli.Done()
	<-delivered
	b.waiting.Store(0) // the cloud broker sends them again
	w.close()
	b.setLink(false)
	switch {
	case ctx.Err() != nil:
		b.log.Info("cloud link closed")
		return
	case err == nil:
		err = c.reason(ctx)
	}
	b.log.Warn("cloud link down; reconnecting, the outbox keeps what is not acknowledged", "error", err)
}

func (b *Bridge) connectFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	b.m.connectErrors.Inc()
	b.connLog.Log(slog.LevelError, "cloud link down; the locker keeps working and the outbox keeps the events; retrying with back-off", "error", err)
}

func (b *Bridge) setLink(up bool) {
	if !up {
		b.downSince.Store(time.Now().UnixNano())
	}
	b.linkUp.Store(up)
}

func (b *Bridge) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{}
	if b.tls == nil {
		return d.DialContext(ctx, "tcp", b.url.Host)
	}
	td := &tls.Dialer{NetDialer: d, Config: b.tls}
	return td.DialContext(ctx, "tcp", b.url.Host)
}

func (b *Bridge) connectPacket() *paho.Connect {
	expiry := uint32(b.cfg.SessionExpiry / time.Second)
	recvMax := uint16(receiveMaximum)
	offline, _ := json.Marshal(status{State: "offline"}) // cannot fail
	return &paho.Connect{
		ClientID:       b.cfg.LockerID,
		KeepAlive:      uint16(b.cfg.KeepAlive / time.Second),
		CleanStart:     false,
		Username:       b.cfg.Username,
		UsernameFlag:   b.cfg.Username != "",
		Password:       []byte(b.cfg.Password),
		PasswordFlag:   b.cfg.Password != "",
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax},
		WillMessage:    &paho.WillMessage{Retain: true, QoS: 1, Topic: b.statusTopic, Payload: offline},
		WillProperties: &paho.WillProperties{},
	}
}

// status is the retained payload of lockers/{id}/status.
type status struct {
	State   string     `json:"state"`
	Version string     `json:"version,omitempty"`
	At      *time.Time `json:"at,omitempty"`
	// Downstream is "ok", or "retrying" while the locker cannot commit a
	// downstream message (which, and why, and since when, follow); the
	// messages behind it wait, unacknowledged.
	Downstream      string     `json:"downstream,omitempty"`
	DownstreamTopic string     `json:"downstream_topic,omitempty"`
	DownstreamError string     `json:"downstream_error,omitempty"`
	DownstreamSince *time.Time `json:"downstream_since,omitempty"`
}

// publishStatus publishes the retained online status with the state of
// downstream delivery.
func (b *Bridge) publishStatus(ctx context.Context, cli *paho.Client, ds downState) {
	now := time.Now().UTC().Truncate(time.Second)
	st := status{State: "online", Version: b.cfg.Version, At: &now, Downstream: "ok"}
	if ds.retrying {
		since := ds.since.UTC().Truncate(time.Second)
		st.Downstream, st.DownstreamTopic, st.DownstreamError, st.DownstreamSince = "retrying", ds.topic, ds.err.Error(), &since
	}
	payload, _ := json.Marshal(st) // cannot fail
	ctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	_, err := cli.Publish(ctx, &paho.Publish{QoS: 1, Retain: true, Topic: b.statusTopic, Payload: payload})
	if err != nil {
		b.log.Warn("cannot publish the online status; check that the cloud broker's ACL lets this locker write lockers/{id}/#",
			"topic", b.statusTopic, "error", err)
	}
}

func (b *Bridge) subscribe(ctx context.Context, cli *paho.Client) {
	sub := &paho.Subscribe{}
	for _, r := range b.down {
		// RetainHandling 1: retained messages only when the subscription is
		// new, not again on every reconnect.
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: r.filter, QoS: r.qos, RetainHandling: 1})
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	sa, err := cli.Subscribe(ctx, sub)
	if err != nil {
		b.log.Error("cannot subscribe to the downstream topics; they arrive after the next reconnect if the session kept them",
			"error", err)
		return
	}
	for i, rc := range sa.Reasons {
		if rc >= 0x80 && i < len(sub.Subscriptions) {
			b.log.Error("the cloud broker refused a downstream subscription; check that its ACL lets this locker read lockers/{id}/#",
				"filter", sub.Subscriptions[i].Topic, "reason_code", fmt.Sprintf("0x%02x", rc))
		}
	}
}

func refusedError(ca *paho.Connack) error {
	reason := (&packets.Connack{ReasonCode: ca.ReasonCode}).Reason()
	hint := ""
	switch ca.ReasonCode {
	case packets.ConnackBadUsernameOrPassword, packets.ConnackNotAuthorized:
		hint = ": check Username/Password (or the client certificate) and the broker's password file"
	}
	return fmt.Errorf("the cloud broker refused the connection: %s (0x%02x)%s", reason, ca.ReasonCode, hint)
}

func disconnectReason(d *paho.Disconnect) string {
	s := fmt.Sprintf("reason code 0x%02x", d.ReasonCode)
	if d.Properties != nil && d.Properties.ReasonString != "" {
		s += ": " + d.Properties.ReasonString
	}
	return s
}
