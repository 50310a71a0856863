package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	bridge "github.com/locky-edge/locky/backend-bridge"
)

// session is how a client connects: a fresh session under a random client
// id, or a persistent one.
type session struct {
	clientID string        // "": a random one, and a clean start
	expiry   time.Duration // with clientID: how long the broker keeps the session after a disconnect
	// manualAck acknowledges a message only when the command calls Ack:
	// what was received but not handled is delivered again.
	manualAck bool
}

// receiveMaximum bounds the messages in flight to a persistent session's
// client: those the broker sent and the client did not acknowledge.
const receiveMaximum = 100

// client is one connection to the cloud broker.
type client struct {
	cli            *paho.Client
	got            chan *paho.Publish
	stop           chan struct{} // closed by close: the handler no longer waits for room in got
	stopOnce       sync.Once
	state          *sessionState
	sessionPresent bool
	expiry         time.Duration // what the broker keeps the session for, when it said

	mu   sync.Mutex
	lost error // why the connection ended, when it did on its own
}

// sessionState is paho's in-memory session state that counts the
// acknowledgements it sends, so that a command can wait until the broker
// has been told about every message it handled before it disconnects, and
// that records a DISCONNECT from the broker before paho ends the client
// (paho's OnServerDisconnect runs only after Done is closed).
type sessionState struct {
	*state.State
	n            atomic.Int64
	sent         chan struct{} // a token after each acknowledgement
	onDisconnect func(*packets.Disconnect)
}

func (s *sessionState) Ack(pb *packets.Publish) error {
	err := s.State.Ack(pb)
	if pb.QoS > 0 {
		s.n.Add(1)
		select {
		case s.sent <- struct{}{}:
		default:
		}
	}
	return err
}

func (s *sessionState) ConnectionLost(dp *packets.Disconnect) error {
	if dp != nil {
		s.onDisconnect(dp)
	}
	return s.State.ConnectionLost(dp)
}

func dial(ctx context.Context, o options) (*client, error) {
	return connect(ctx, o, session{})
}

// connect opens a connection to the broker at --url and starts the session
// s on it.
func connect(ctx context.Context, o options, s session) (*client, error) {
	if o.url == "" {
		return nil, errNoURL
	}
	u, tc, err := bridge.Endpoint{URL: o.url, CAFile: o.caFile, CertFile: o.certFile, KeyFile: o.keyFile}.Resolve()
	if err != nil {
		return nil, usageError{fmt.Errorf("--url and its TLS files (--ca-file, --cert-file, --key-file): %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	conn, err := dialBroker(ctx, o, u.Host, tc)
	if err != nil {
		return nil, err
	}
	c := newClient(conn, s)
	ca, err := c.cli.Connect(ctx, connectPacket(o, s))
	if err != nil {
		_ = c.state.Close() // nothing of it is in use
		if ca != nil && ca.ReasonCode >= 0x80 {
			return nil, refusedError{o.url, ca.ReasonCode}
		}
		return nil, linkError{fmt.Errorf("cannot connect to %s: %w", o.url, err)}
	}
	c.sessionPresent = ca.SessionPresent
	c.expiry = s.expiry
	if ca.Properties != nil && ca.Properties.SessionExpiryInterval != nil {
		c.expiry = time.Duration(*ca.Properties.SessionExpiryInterval) * time.Second
	}
	return c, nil
}

// dialBroker opens the TCP connection to host, over TLS when tc is set.
func dialBroker(ctx context.Context, o options, host string, tc *tls.Config) (net.Conn, error) {
	d := &net.Dialer{}
	if tc == nil {
		conn, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			return nil, linkError{fmt.Errorf("cannot reach %s: %w", o.url, err)}
		}
		return conn, nil
	}
	conn, err := (&tls.Dialer{NetDialer: d, Config: tc}).DialContext(ctx, "tcp", host)
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return nil, fmt.Errorf("cannot verify the certificate of %s: %w (give the CA that signed it with --ca-file)", o.url, err)
	}
	if err != nil {
		return nil, linkError{fmt.Errorf("cannot reach %s: %w", o.url, err)}
	}
	return conn, nil
}

// newClient builds the paho client of session s on conn, recording why the
// connection ends as it does.
func newClient(conn net.Conn, s session) *client {
	c := &client{got: make(chan *paho.Publish, 1024), stop: make(chan struct{})}
	conn = &recordingConn{Conn: conn, onErr: c.setLost}
	c.state = &sessionState{State: state.NewInMemory(), sent: make(chan struct{}, 1), onDisconnect: func(d *packets.Disconnect) {
		c.setLost(serverDisconnect{d.Reason(), d.ReasonCode})
	}}
	c.cli = paho.NewClient(paho.ClientConfig{
		Conn:                       packets.NewThreadSafeConn(conn),
		Session:                    c.state,
		EnableManualAcknowledgment: s.manualAck,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.got <- pr.Packet:
			case <-c.stop:
			}
			return true, nil
		}},
		PingHandler:   &recordingPinger{Pinger: paho.NewDefaultPinger(), onErr: c.setLost},
		OnClientError: c.setLost,
	})
	return c
}

// connectPacket is the CONNECT of session s: a clean start under a random
// client id, or s's client id with its session expiry.
func connectPacket(o options, s session) *paho.Connect {
	cp := &paho.Connect{ClientID: s.clientID, KeepAlive: 30, CleanStart: s.clientID == "",
		Username: o.username, UsernameFlag: o.username != "", Password: []byte(o.password), PasswordFlag: o.password != ""}
	if s.clientID == "" {
		cp.ClientID = "lockyctl-" + randomHex(6)
	} else {
		expiry, recvMax := uint32(min(s.expiry/time.Second, 1<<32-1)), uint16(receiveMaximum)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax}
	}
	return cp
}

func (c *client) setLost(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost == nil {
		c.lost = err
	}
}

// recordingConn reports why reading from the broker failed, as it fails:
// paho reports it only once the client is done, after Done is closed.
type recordingConn struct {
	net.Conn
	onErr func(error)
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	switch {
	case err == nil || errors.Is(err, net.ErrClosed): // closed here, for a reason told already
	case errors.Is(err, io.EOF):
		c.onErr(errors.New("the broker closed the connection"))
	default:
		c.onErr(err)
	}
	return n, err
}

// recordingPinger reports a keep-alive failure as it happens.
type recordingPinger struct {
	paho.Pinger
	onErr func(error)
}

func (p *recordingPinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	err := p.Pinger.Run(ctx, conn, keepAlive)
	if err != nil {
		p.onErr(fmt.Errorf("no answer to keep-alives: %w", err))
	}
	return err
}

// why says why the connection ended.
func (c *client) why() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost == nil {
		return errors.New("the connection ended")
	}
	return c.lost
}

// subscribe subscribes to filter with QoS 1 and fails if the broker refuses.
func (c *client) subscribe(ctx context.Context, o options, filter string) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	sa, err := c.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	switch {
	case sa != nil && (len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80):
		return subscriptionRefused{filter, sa.Reasons}
	case err != nil:
		return fmt.Errorf("cannot subscribe to %s: %w", filter, err)
	}
	return nil
}

// subscribeIfAllowed subscribes to filter for what it may tell, if the broker
// lets us; it reports whether it did.
func (c *client) subscribeIfAllowed(ctx context.Context, o options, filter string) bool {
	return c.subscribe(ctx, o, filter) == nil
}

// waitAcks waits until the broker has been sent the acknowledgement of n
// messages, at most --timeout or until the connection ends.
func (c *client) waitAcks(o options, n int64) {
	t := time.NewTimer(o.timeout)
	defer t.Stop()
	for c.state.n.Load() < n {
		select {
		case <-c.state.sent:
		case <-c.cli.Done():
			return
		case <-t.C:
			return
		}
	}
}

// close disconnects; a persistent session stays with the broker.
func (c *client) close() {
	c.stopOnce.Do(func() { close(c.stop) })
	_ = c.cli.Disconnect(&paho.Disconnect{}) // a connection already lost fails to write: nothing to do
	_ = c.state.Close()                      // after Disconnect: paho no longer uses it
}

// lockerStatus is the retained payload of lockers/{id}/status.
type lockerStatus struct {
	State   string `json:"state"`
	Version string `json:"version"`
	At      string `json:"at"`
}

// doorStateFilter is where a locker's local broker holds its retained door
// states (SPEC §4); a cloud broker has none of them.
const doorStateFilter = "locky/doors/+/state"

// brokerView is what a broker holds retained: the lockers' statuses, and
// whether it is a locker's local broker.
type brokerView struct {
	statuses map[string]lockerStatus
	local    bool // it holds retained door states
}

// look collects the retained statuses under statusFilter and tells whether
// the broker holds a locker's door states. The broker sends the retained
// messages of a subscription right after its SUBACK; a probe published
// afterwards comes back after them all. Without the right to publish the
// probe, the wait ends at --timeout.
func (c *client) look(ctx context.Context, o options, statusFilter string) (brokerView, error) {
	v := brokerView{statuses: map[string]lockerStatus{}}
	if err := c.subscribe(ctx, o, statusFilter); err != nil {
		return v, err
	}
	c.subscribeIfAllowed(ctx, o, doorStateFilter) // a cloud broker's ACL may refuse it: it holds none anyway
	probe := "lockers/_lockyctl-" + randomHex(6) + "/probe"
	if c.subscribeIfAllowed(ctx, o, probe) {
		pctx, cancel := context.WithTimeout(ctx, o.timeout)
		_, _ = c.cli.Publish(pctx, &paho.Publish{Topic: probe, QoS: 1, Payload: []byte("{}")}) // a refusal means the timeout ends the wait
		cancel()
	}
	wait := time.NewTimer(o.timeout)
	defer wait.Stop()
	for {
		select {
		case p := <-c.got:
			switch {
			case p.Topic == probe:
				return v, nil
			case strings.HasPrefix(p.Topic, "locky/doors/"):
				v.local = true
			case strings.HasPrefix(p.Topic, "lockers/"):
				var st lockerStatus
				if json.Unmarshal(p.Payload, &st) == nil {
					v.statuses[strings.Split(p.Topic, "/")[1]] = st
				}
			}
		case <-wait.C:
			return v, nil
		case <-c.cli.Done():
			return v, fmt.Errorf("lost the connection to %s: %w", o.url, c.why())
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}
