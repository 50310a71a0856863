// Package broker embeds the locker's MQTT broker (mochi-mqtt v2): MQTT 3.1.1
// and 5 over TCP, with an inline client through which the handlers publish
// and subscribe.
//
// Its place in the layering: part of the assembly (gateway/); it imports
// only the contract, and the handlers reach it through their own small
// interfaces.
package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/locky-edge/locky/handlers/contract"
)

// Config configures the broker. The zero value of each field means its default.
type Config struct {
	// Addr is the TCP listen address; "127.0.0.1:0" picks a free port.
	// Required unless Listener is set.
	Addr string
	// Listener, if set, is a listening TCP socket the broker serves instead
	// of binding Addr (one systemd passed, say), under the same connection
	// limits. The broker owns it: Close closes it, and so does New if it
	// fails. Nil means bind Addr.
	Listener net.Listener
	// AllowAnonymous lets a client without a user name connect and use any
	// topic (dev mode).
	AllowAnonymous bool
	// Users may connect with their password and use their role's topics.
	// With no users and no AllowAnonymous, every client is refused: only the
	// gateway's own handlers use the broker.
	Users []User
	// MaxPacketSize bounds one MQTT packet; a client sending a larger one is
	// disconnected. Zero means 256 KiB: payloads above the contract's 64 KiB
	// but below this get a specific error answer from their handler.
	MaxPacketSize uint32
	// MaxWritesPending bounds the queue of messages to one slow client; past
	// it, messages to that client are dropped and counted
	// (locky_broker_messages_dropped_total{reason="queue_full"}). Zero means
	// 8192.
	MaxWritesPending int32
	// MaxQueuedBytes bounds the bytes written to one client that its TCP
	// connection has not yet taken; past it the client is disconnected and
	// counted (locky_broker_slow_clients_disconnected_total{reason="queue_full"}),
	// so that a client that stops reading costs no one else a wait. Zero
	// means 4 × MaxPacketSize.
	MaxQueuedBytes int
	// WriteTimeout bounds one send of queued bytes to a client; a client
	// that takes none for this long is disconnected and counted
	// (locky_broker_slow_clients_disconnected_total{reason="write_timeout"}).
	// Zero means 10 s.
	WriteTimeout time.Duration

	// The limits of clients (SPEC §6: abuse is bounded and counted), sized
	// for a 1 GB Raspberry Pi with about 50 doors, a kiosk and a few door
	// boards. Each refusal is counted in
	// locky_broker_connections_refused_total{reason}.
	//
	// MaxClients bounds the clients connected at once; the next one gets
	// CONNACK 0x89 Server busy (0x03 Server unavailable in MQTT 3.1.1).
	// Zero means DefaultMaxClients.
	MaxClients int
	// MaxConnecting bounds the connections at once that have not yet
	// delivered their CONNECT; past it a new connection evicts the oldest of
	// them (counted as reason evicted). Zero means MaxClients.
	MaxConnecting int
	// MaxPerAddr bounds the open connections from one IP address; past it a
	// new connection is closed at once. Zero means 32.
	MaxPerAddr int
	// ConnectTimeout is the time a new connection has to deliver its whole
	// CONNECT packet before it is closed. Zero means 5 s.
	ConnectTimeout time.Duration
	// ConnectBurst and ConnectEvery bound the CONNECTs of one IP address:
	// ConnectBurst at once, then one per ConnectEvery. Past it a client gets
	// CONNACK 0x9F Connection rate exceeded (0x03 in MQTT 3.1.1) before its
	// password is checked. Zero means 32 and 100 ms.
	ConnectBurst int
	ConnectEvery time.Duration
	// MaxRetained bounds the retained topics: a retained publish on a new
	// topic past it is refused (PUBACK 0x97 Quota exceeded in MQTT 5 at QoS
	// 1 and 2, dropped at QoS 0, disconnected in MQTT 3.1.1 at QoS 1 and 2)
	// and counted in locky_broker_retained_refused_total. Replacing or
	// deleting a retained message, and the gateway's own retained messages,
	// are never refused; mochi's $SYS topics are not counted. Zero means 512
	// (so clients' retained messages hold at most 512 × MaxPacketSize bytes).
	MaxRetained int
	// MaxInflight bounds the QoS 1 and 2 messages to one client awaiting
	// its acknowledgement; past it, messages to that client are dropped and
	// counted (locky_broker_messages_dropped_total{reason="inflight_full"}).
	// Zero means 8192.
	MaxInflight uint16

	Metrics *metrics.Set // nil means a private set
	Logger  *slog.Logger // nil means slog.Default()
}

// Broker is the embedded broker.
type Broker struct {
	srv    *mqtt.Server
	ln     *connListener
	wq     *writeQueue
	logs   *logHandler
	inline *mqtt.Client
	log    *slog.Logger
	subID  atomic.Int64
	guard  *retainGuard

	deliver deliverer

	closeOnce sync.Once
}

// New creates the broker and binds its listener, so that a busy port is
// reported here rather than later.
func New(cfg Config) (*Broker, error) {
	if cfg.Addr == "" && cfg.Listener == nil {
		return nil, errors.New("broker: listen address is empty; set --mqtt-addr")
	}
	owned := cfg.Listener // closed if New fails before the server takes it
	defer func() {
		if owned != nil {
			_ = owned.Close()
		}
	}()
	if err := cfg.fillDefaults(); err != nil {
		return nil, err
	}
	met := newBrokerMetrics(cfg.Metrics)
	logs := newLogHandler(cfg.Logger.Handler(), met.logSuppressed.Inc)
	cfg.Logger = slog.New(logs) // every line of the broker and its hooks is redacted and throttled
	log := cfg.Logger.With("component", "broker")
	srv := mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Capabilities:           capabilities(cfg),
		Logger:                 log,
		SysTopicResendInterval: 10,
	})
	tcpLn, err := listen(cfg)
	if err != nil {
		return nil, err
	}
	owned = tcpLn
	wq, ln := newListener(srv, tcpLn, cfg, met, log)
	guard, err := addHooks(srv, ln, cfg, met)
	if err != nil {
		return nil, err
	}
	if err := srv.AddListener(ln); err != nil {
		return nil, fmt.Errorf("broker: add listener: %w", err)
	}
	owned = nil // the server's now: Close closes it
	inline, ok := srv.Clients.Get(mqtt.InlineClientId)
	if !ok {
		return nil, errors.New("broker: inline client missing")
	}
	b := &Broker{srv: srv, ln: ln, wq: wq, logs: logs, inline: inline, log: log, guard: guard}
	b.deliver.cl = srv.NewClient(nil, mqtt.LocalListener, delivererID, true)
	b.registerMetrics(cfg.Metrics)
	return b, nil
}

// fillDefaults sets each zero field of c to its default, and refuses a
// negative limit.
func (c *Config) fillDefaults() error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = 256 << 10
	}
	if c.MaxWritesPending == 0 {
		c.MaxWritesPending = 8192
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = 4 * int(c.MaxPacketSize)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if err := c.fillLimits(); err != nil {
		return err
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	return nil
}

// capabilities are mochi's options for the limits of cfg.
func capabilities(cfg Config) *mqtt.Capabilities {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.MaximumClientWritesPending = cfg.MaxWritesPending
	caps.MaximumClients = int64(cfg.MaxClients)
	caps.MaximumInflight = cfg.MaxInflight
	// Else mochi echoes a publish's user properties on its PUBACK (a spec
	// violation, its docs say): the client's own data sent back to it.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	// Door states are retained and must not vanish after mochi's default 24 h.
	caps.MaximumMessageExpiryInterval = 0
	return caps
}

// listen returns cfg.Listener, or else a TCP socket bound to cfg.Addr.
func listen(cfg Config) (net.Listener, error) {
	if cfg.Listener != nil {
		return cfg.Listener, nil
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker: cannot listen on %s (is another broker or gateway running? set --mqtt-addr): %w", cfg.Addr, err)
	}
	return ln, nil
}

// newListener wraps tcpLn in the write queue, which disconnects slow
// clients, and the connection listener, which enforces the limits of
// connections.
func newListener(srv *mqtt.Server, tcpLn net.Listener, cfg Config, met *brokerMetrics, log *slog.Logger) (*writeQueue, *connListener) {
	slow := func(reason string) *metrics.Counter {
		return cfg.Metrics.NewCounter(fmt.Sprintf("locky_broker_slow_clients_disconnected_total{reason=%q}", reason))
	}
	wq := &writeQueue{Listener: tcpLn, maxQueued: cfg.MaxQueuedBytes, writeTimeout: cfg.WriteTimeout,
		queueFull: slow("queue_full"), timedOut: slow("write_timeout"), log: log}
	ln := newConnListener(wq, cfg, met, func(cl *mqtt.Client) { _ = srv.DisconnectClient(cl, packets.ErrPacketTooLarge) })
	return wq, ln
}

// addHooks adds the broker's hooks to srv in the order they must run:
// connection limits, auth, the retain guard, the retained limit; then the
// takeover relay.
func addHooks(srv *mqtt.Server, ln *connListener, cfg Config, met *brokerMetrics) (*retainGuard, error) {
	// First, so that a CONNECT is counted as read, and an address that
	// connects too often is refused, before any password is checked.
	connLimits := &connectLimits{srv: srv, ln: ln, rate: newConnectRate(cfg.ConnectBurst, cfg.ConnectEvery), maxPacketSize: cfg.MaxPacketSize}
	if err := srv.AddHook(connLimits, nil); err != nil {
		return nil, fmt.Errorf("broker: add connection limits: %w", err)
	}
	hook, err := newAuthHook(srv, cfg)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("broker: add auth hook: %w", err)
	}
	guard := new(retainGuard)
	if err := srv.AddHook(guard, nil); err != nil {
		return nil, fmt.Errorf("broker: add retain guard: %w", err)
	}
	// After the retain guard: it checks the count under the guard's lock.
	if err := srv.AddHook(&retainLimit{srv: srv, max: cfg.MaxRetained, refused: met.retainedRefused}, nil); err != nil {
		return nil, fmt.Errorf("broker: add retained limit: %w", err)
	}
	if err := srv.AddHook(newTakeoverRelay(srv, hook.OnACLCheck), nil); err != nil {
		return nil, fmt.Errorf("broker: add takeover relay: %w", err)
	}
	return guard, nil
}

// Start starts accepting clients.
func (b *Broker) Start() error { return b.srv.Serve() }

// Addr returns the address the broker listens on.
func (b *Broker) Addr() string { return b.ln.Address() }

// Close disconnects every client, closes the connections not yet past their
// CONNECT, stops the broker and writes the summaries of the log lines it
// suppressed. Safe to call twice.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		_ = b.srv.Close()
		b.wq.wg.Wait() // each sender ends within the write timeout
		b.logs.flush()
	})
	return nil
}

// Publish publishes a message as the gateway.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if retain {
		defer b.guard.lockInline().release() // released sooner, once retained
	}
	return b.srv.Publish(topic, payload, retain, qos)
}

// PublishResponse publishes an MQTT 5 response carrying correlation data.
func (b *Broker) PublishResponse(topic string, correlation, payload []byte) error {
	return b.srv.InjectPacket(b.inline, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     payload,
		Properties:  packets.Properties{CorrelationData: correlation},
		PacketID:    1,
	})
}

// Subscribe calls fn for every message on filter, on the publisher's
// goroutine: fn must not block for long.
func (b *Broker) Subscribe(filter string, fn func(contract.Message)) error {
	return b.subscribe(filter, func(pk packets.Packet) { fn(message(pk)) })
}

func (b *Broker) subscribe(filter string, fn func(packets.Packet)) error {
	id := int(b.subID.Add(1))
	b.guard.mu.RLock()
	defer b.guard.mu.RUnlock()
	return b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) { fn(pk) })
}

// message is pk as the handlers see it.
func message(pk packets.Packet) contract.Message {
	return contract.Message{
		Topic:         pk.TopicName,
		Payload:       pk.Payload,
		ResponseTopic: pk.Properties.ResponseTopic,
		Correlation:   bytes.Clone(pk.Properties.CorrelationData),
	}
}

// Clients returns the number of connected clients (the gateway's own inline
// client excluded).
func (b *Broker) Clients() int64 { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) }

func (b *Broker) registerMetrics(s *metrics.Set) {
	info := b.srv.Info
	gauge := func(name string, v *int64) {
		s.NewGauge(name, func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	gauge("locky_broker_clients_connected", &info.ClientsConnected)
	gauge("locky_broker_retained_messages", &info.Retained)
	gauge("locky_broker_inflight_messages", &info.Inflight)
	gauge("locky_broker_subscriptions", &info.Subscriptions)
	s.NewGauge("locky_broker_connections_open", func() float64 { open, _ := b.ln.counts(); return float64(open) })
	s.NewGauge("locky_broker_connections_connecting", func() float64 { _, c := b.ln.counts(); return float64(c) })
	// mochi keeps its own counters; they are written as counters, which a
	// gauge of the set would not be.
	s.RegisterMetricsWriter(func(w io.Writer) {
		load := func(v *int64) uint64 { return uint64(max(atomic.LoadInt64(v), 0)) }
		metrics.WriteCounterUint64(w, "locky_broker_messages_received_total", load(&info.MessagesReceived))
		metrics.WriteCounterUint64(w, "locky_broker_messages_sent_total", load(&info.MessagesSent))
		// Dropped to a slow client: its queue of MaxWritesPending was full,
		// or MaxInflight of its QoS 1 and 2 messages awaited their ack.
		metrics.WriteMetadataIfNeeded(w, "locky_broker_messages_dropped_total", "counter")
		fmt.Fprintf(w, "locky_broker_messages_dropped_total{reason=%q} %d\n", "queue_full", load(&info.MessagesDropped))
		fmt.Fprintf(w, "locky_broker_messages_dropped_total{reason=%q} %d\n", "inflight_full", load(&info.InflightDropped))
		metrics.WriteCounterUint64(w, "locky_broker_bytes_received_total", load(&info.BytesReceived))
		metrics.WriteCounterUint64(w, "locky_broker_bytes_sent_total", load(&info.BytesSent))
	})
}

// writeQueue takes the broker's TCP connections from the listener and makes
// their writes never block: mochi v2.7.9 writes a packet to the socket
// holding the client's lock (clients.go WritePacket), and a publish to a QoS
// 1 or 2 subscriber takes that lock for its packet id (NextPacketID) on the
// publisher's goroutine. A subscriber that stops reading filled its socket
// buffer, its write blocked until its keepalive deadline (1.5 × a keepalive
// the client chooses), and every publisher to its topics waited with it: the
// kiosk's reading goroutine, the controller, the back-end's downstream
// messages. Here a write only queues its bytes and one goroutine per
// connection sends them; a connection whose queue passes maxQueued bytes,
// or whose send takes longer than writeTimeout, is closed and counted in
// locky_broker_slow_clients_disconnected_total{reason}.
type writeQueue struct {
	net.Listener
	maxQueued    int
	writeTimeout time.Duration
	queueFull    *metrics.Counter
	timedOut     *metrics.Counter
	log          *slog.Logger
	wg           sync.WaitGroup // the senders
}

func (q *writeQueue) Accept() (net.Conn, error) {
	c, err := q.Listener.Accept()
	if err != nil {
		return nil, err
	}
	qc := &queuedConn{Conn: c, q: q, wake: make(chan struct{}, 1), closing: make(chan struct{})}
	q.wg.Add(1)
	go qc.send()
	return qc, nil
}

// queuedConn is a connection whose writes are queued for its sender.
type queuedConn struct {
	net.Conn
	q    *writeQueue
	wake chan struct{} // a write was queued

	mu      sync.Mutex
	queued  []byte
	err     error         // set once the connection can take no more writes
	closing chan struct{} // closed by Close
	once    sync.Once
}

// Write queues p; it fails once the connection is closed or too slow.
func (c *queuedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if n := len(c.queued) + len(p); n > c.q.maxQueued {
		c.err = fmt.Errorf("client reads too slowly: over %d bytes queued (raise the broker's MaxQueuedBytes if this is no attack): %w", c.q.maxQueued, net.ErrClosed)
		err := c.err
		c.mu.Unlock() // n, not c.queued, below: the sender owns it now
		c.q.queueFull.Inc()
		c.q.log.Warn("MQTT client disconnected: it does not read what it subscribed to", "remote", c.RemoteAddr().String(), "queued_bytes", n)
		c.abort()
		return 0, err
	}
	c.queued = append(c.queued, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// SetDeadline sets the read deadline only: the sender keeps its own.
func (c *queuedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored: writes do not block, the sender has its own.
func (c *queuedConn) SetWriteDeadline(time.Time) error { return nil }

// Close ends reading at once; the sender sends what is queued (a CONNACK
// refusal, a DISCONNECT) within the write timeout, then closes the socket.
func (c *queuedConn) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.mu.Unlock()
		close(c.closing)
		_ = c.Conn.SetReadDeadline(time.Now())
	})
	return nil
}

// abort closes the socket without sending what is queued.
func (c *queuedConn) abort() {
	_ = c.Close()
	_ = c.Conn.Close()
}

// send writes the queued bytes until the connection is closed.
func (c *queuedConn) send() {
	defer c.q.wg.Done()
	defer func() { _ = c.Conn.Close() }()
	var buf []byte
	for {
		closing := false
		select {
		case <-c.wake:
		case <-c.closing:
			closing = true
		}
		c.mu.Lock()
		buf, c.queued = c.queued, buf[:0]
		c.mu.Unlock()
		if len(buf) > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(c.q.writeTimeout))
			if _, err := c.Conn.Write(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					c.q.timedOut.Inc()
					c.q.log.Warn("MQTT client disconnected: it took no data for the write timeout", "remote", c.RemoteAddr().String(), "timeout", c.q.writeTimeout)
				}
				c.abort()
				return
			}
		}
		if closing {
			c.mu.Lock()
			more := len(c.queued) > 0
			c.mu.Unlock()
			if !more {
				return
			}
		}
	}
}
