// Package broker embeds the locker's MQTT broker (mochi-mqtt v2): MQTT 3.1.1
// and 5 over TCP, with an inline client through which the handlers publish
// and subscribe.
package broker

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/locky-edge/locky/handlers/contract"
)

// Config configures the broker. The zero value of each field means its default.
type Config struct {
	// Addr is the TCP listen address; "127.0.0.1:0" picks a free port. Required.
	Addr string
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
	// it, messages to that client are dropped and counted. Zero means 8192.
	MaxWritesPending int32
	Metrics          *metrics.Set // nil means a private set
	Logger           *slog.Logger // nil means slog.Default()
}

// Broker is the embedded broker.
type Broker struct {
	srv    *mqtt.Server
	tcp    *listeners.TCP
	inline *mqtt.Client
	log    *slog.Logger
	subID  atomic.Int64
	guard  *retainGuard

	closeOnce sync.Once
}

// New creates the broker and binds its listener, so that a busy port is
// reported here rather than later.
func New(cfg Config) (*Broker, error) {
	if cfg.Addr == "" {
		return nil, errors.New("broker: listen address is empty; set --mqtt-addr")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = 256 << 10
	}
	if cfg.MaxWritesPending == 0 {
		cfg.MaxWritesPending = 8192
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.MaximumClientWritesPending = cfg.MaxWritesPending
	// Door states are retained and must not vanish after mochi's default 24 h.
	caps.MaximumMessageExpiryInterval = 0
	log := cfg.Logger.With("component", "broker")
	srv := mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Capabilities:           caps,
		Logger:                 log,
		SysTopicResendInterval: 10,
	})
	var hook mqtt.Hook = new(allowAll)
	if len(cfg.Users) > 0 || !cfg.AllowAnonymous {
		h, err := newAuthHook(cfg.Users, cfg.AllowAnonymous)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		hook = h
	}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("broker: add auth hook: %w", err)
	}
	guard := new(retainGuard)
	if err := srv.AddHook(guard, nil); err != nil {
		return nil, fmt.Errorf("broker: add retain guard: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "tcp", Address: cfg.Addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("broker: cannot listen on %s (is another broker or gateway running? set --mqtt-addr): %w", cfg.Addr, err)
	}
	inline, ok := srv.Clients.Get(mqtt.InlineClientId)
	if !ok {
		return nil, errors.New("broker: inline client missing")
	}
	b := &Broker{srv: srv, tcp: tcp, inline: inline, log: log, guard: guard}
	if cfg.Metrics != nil {
		b.registerMetrics(cfg.Metrics)
	}
	return b, nil
}

// Start starts accepting clients.
func (b *Broker) Start() error { return b.srv.Serve() }

// Addr returns the address the broker listens on.
func (b *Broker) Addr() string { return b.tcp.Address() }

// Close disconnects every client and stops the broker. Safe to call twice.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() { _ = b.srv.Close() })
	return nil
}

// Publish publishes a message as the gateway.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if retain {
		b.guard.mu.Lock()
		defer b.guard.mu.Unlock()
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
	id := int(b.subID.Add(1))
	b.guard.mu.RLock()
	defer b.guard.mu.RUnlock()
	return b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		fn(contract.Message{
			Topic:         pk.TopicName,
			Payload:       pk.Payload,
			ResponseTopic: pk.Properties.ResponseTopic,
			Correlation:   bytes.Clone(pk.Properties.CorrelationData),
		})
	})
}

// Server returns the mochi server, for the bridge and the tests.
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Clients returns the number of connected clients (the gateway's own inline
// client excluded).
func (b *Broker) Clients() int64 { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) }

func (b *Broker) registerMetrics(s *metrics.Set) {
	info := b.srv.Info
	gauge := func(name string, v *int64) {
		s.NewGauge(name, func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	gauge("locky_broker_clients_connected", &info.ClientsConnected)
	gauge("locky_broker_messages_received_total", &info.MessagesReceived)
	gauge("locky_broker_messages_sent_total", &info.MessagesSent)
	gauge("locky_broker_messages_dropped_total", &info.MessagesDropped)
	gauge("locky_broker_inflight_dropped_total", &info.InflightDropped)
	gauge("locky_broker_retained_messages", &info.Retained)
	gauge("locky_broker_inflight_messages", &info.Inflight)
	gauge("locky_broker_subscriptions", &info.Subscriptions)
	gauge("locky_broker_bytes_received_total", &info.BytesReceived)
	gauge("locky_broker_bytes_sent_total", &info.BytesSent)
}

// allowAll lets every client connect and use every topic: dev mode only.
type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow-all-dev-mode" }

func (h *allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
