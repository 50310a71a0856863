package bridge

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/store"
)

// Outbox is the durable upstream queue that the bridge drains; *store.Store
// implements it.
type Outbox interface {
	// OutboxHold returns up to max messages whose sequence is above after,
	// oldest first, and holds them: the outbox's bounds do not drop them
	// until OutboxDelivered removes them or OutboxRelease releases them.
	OutboxHold(after uint64, max int) ([]store.Message, error)
	// OutboxRelease releases held messages that stay in the outbox (refused,
	// or their link dropped before the PUBACK): the bounds apply to them again.
	OutboxRelease(seqs ...uint64)
	// OutboxDelivered deletes messages (acknowledged by the cloud broker,
	// or unmapped) and releases them; it returns how many it deleted, which
	// excludes those a bound had dropped (counted there) or removed before.
	OutboxDelivered(seqs ...uint64) (int, error)
	// OutboxNotify receives after each commit that appended messages.
	OutboxNotify() <-chan struct{}
}

// Local is the locker's broker, through which the cloud's messages enter the
// locker like every other message; the gateway's broker implements it.
// Deliver publishes a message and returns once the locker's handlers of its
// topic have run, with nil only when they committed it, so that the bridge
// may then acknowledge it upstream. An error means the locker could not take
// it (yet): the bridge retries the same message, with back-off, before any
// later one. An error with an Unhandled() method that returns true means no
// handler takes the topic at all (a mapping mistake): the bridge acknowledges
// it and counts it dropped instead, since retrying would publish it again.
type Local interface {
	Deliver(topic string, payload []byte, qos byte) error
}

// Mapping maps the topics of one broker onto the other. From and To are
// either two exact topics, or two filters ending in "/#" (or "#" alone) whose
// prefixes are swapped, the rest of the topic carried over. "{id}" in either
// stands for the locker id.
type Mapping struct {
	From string
	To   string
	// QoS is the QoS of the published message (upstream) or of the
	// subscription and the local publish (downstream): 0 or 1.
	QoS byte
}

// DefaultUp returns the upstream mapping used when Config.Up is nil.
func DefaultUp() []Mapping { return []Mapping{{From: "locky/up/#", To: "lockers/{id}/up/#", QoS: 1}} }

// DefaultDown returns the downstream mapping used when Config.Down is nil.
func DefaultDown() []Mapping {
	return []Mapping{{From: "lockers/{id}/down/#", To: "locky/down/#", QoS: 1}}
}

// Config configures a Bridge. The zero value of each optional field means the
// default that its comment gives.
type Config struct {
	// LockerID is the MQTT client id, the {id} of the mappings and of
	// lockers/{id}/status, and the user name that the example cloud broker's
	// ACL expects. Required: one topic level, no '/', '+' or '#'.
	LockerID string
	// URL is the cloud broker: mqtt://host[:port] (port 1883 by default) or
	// mqtts://host[:port] (TLS, port 8883 by default). Required.
	URL string
	// Username and Password authenticate the locker to the cloud broker.
	// Empty means none is sent.
	Username string
	Password string
	// CAFile is a PEM file of the CAs that sign the cloud broker's
	// certificate. Empty means the system's roots. Only with mqtts://.
	CAFile string
	// CertFile and KeyFile are the locker's PEM client certificate and key.
	// Empty means no client certificate. Both or neither; only with mqtts://.
	CertFile string
	KeyFile  string
	// SessionExpiry is how long the cloud broker keeps the locker's session
	// (subscriptions and queued downstream messages) while the link is down.
	// Zero means 7 days.
	SessionExpiry time.Duration
	// KeepAlive is the MQTT keep-alive, which also bounds how long a silently
	// dead link goes unnoticed (1.5 times it). Zero means 30 s.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt (TCP, TLS and CONNACK) and
	// the wait for the answer to a status publish or a subscribe. Zero means 10 s.
	ConnectTimeout time.Duration
	// RetryMin and RetryMax bound the pause between connection attempts: a
	// random part of RetryMin after a link that was up, then RetryMin
	// doubling after each failure up to RetryMax, with jitter (a random half
	// to all of it). Zero means 1 s and 2 min.
	RetryMin time.Duration
	RetryMax time.Duration
	// LocalRetryMin and LocalRetryMax bound the pause between attempts to
	// deliver a downstream message that the locker could not commit (Local
	// returned an error): it doubles from LocalRetryMin after each failure up
	// to LocalRetryMax. The link stays up meanwhile. Zero means 100 ms and 30 s.
	LocalRetryMin time.Duration
	LocalRetryMax time.Duration
	// Window is the most upstream messages published and not yet
	// acknowledged; the cloud broker's Receive Maximum may lower it further.
	// Zero means 256.
	Window int
	// Up maps local upstream topics (the outbox's) to cloud topics. Nil means
	// DefaultUp. An outbox message that no mapping matches is dropped, logged
	// and counted.
	Up []Mapping
	// Down maps cloud topics to local topics; its From filters are what the
	// bridge subscribes to. Nil means DefaultDown.
	Down []Mapping
	// Outbox is the durable upstream queue (the store). Required.
	Outbox Outbox
	// Local is the locker's broker, which receives the downstream messages.
	// Required.
	Local Local
	// Version is reported in the online status message. Empty means omitted.
	Version string
	// Logger receives the bridge's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Metrics receives the bridge's metrics (locky_bridge_*, and the outbox
	// messages it drops as locky_outbox_dropped_total{reason="unmapped"}).
	// Nil means a set of the bridge's own (see Bridge.Metrics). A set holds
	// one bridge.
	Metrics *metrics.Set
	// LogEvery rate-limits each repeating error (a dead uplink, refused
	// credentials) to one line per period, with the count of those left out.
	// Zero means 1 min.
	LogEvery time.Duration
}

// withDefaults returns cfg with its zero values replaced by the defaults.
func (cfg Config) withDefaults() Config {
	if cfg.SessionExpiry == 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.LocalRetryMin == 0 {
		cfg.LocalRetryMin = 100 * time.Millisecond
	}
	if cfg.LocalRetryMax == 0 {
		cfg.LocalRetryMax = 30 * time.Second
	}
	if cfg.Window == 0 {
		cfg.Window = 256
	}
	if cfg.Up == nil {
		cfg.Up = DefaultUp()
	}
	if cfg.Down == nil {
		cfg.Down = DefaultDown()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.LogEvery == 0 {
		cfg.LogEvery = time.Minute
	}
	return cfg
}

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

// check validates a Config that has its defaults.
func (cfg Config) check() error {
	if cfg.LockerID == "" || strings.ContainsAny(cfg.LockerID, "/+#") {
		return configErr("LockerID %q must be one topic level, without '/', '+' or '#'", cfg.LockerID)
	}
	if cfg.Outbox == nil {
		return configErr("Outbox is nil: pass the store")
	}
	if cfg.Local == nil {
		return configErr("Local is nil: pass the locker's broker")
	}
	if cfg.SessionExpiry < 0 || cfg.SessionExpiry/time.Second > 1<<32-1 {
		return configErr("SessionExpiry %s is out of range (0 to 136 years)", cfg.SessionExpiry)
	}
	if cfg.KeepAlive < time.Second || cfg.KeepAlive/time.Second > 65535 {
		return configErr("KeepAlive %s is out of range (1 s to 18 h)", cfg.KeepAlive)
	}
	if cfg.ConnectTimeout < 0 || cfg.RetryMin < 0 || cfg.RetryMax < cfg.RetryMin {
		return configErr("ConnectTimeout %s, RetryMin %s, RetryMax %s: none may be negative and RetryMax must not be below RetryMin",
			cfg.ConnectTimeout, cfg.RetryMin, cfg.RetryMax)
	}
	if cfg.LocalRetryMin < 0 || cfg.LocalRetryMax < cfg.LocalRetryMin {
		return configErr("LocalRetryMin %s, LocalRetryMax %s: neither may be negative and LocalRetryMax must not be below LocalRetryMin",
			cfg.LocalRetryMin, cfg.LocalRetryMax)
	}
	if cfg.Window < 1 || cfg.Window > 65535 {
		return configErr("Window %d is out of range (1 to 65535)", cfg.Window)
	}
	if cfg.LogEvery < 0 {
		return configErr("LogEvery %s is negative", cfg.LogEvery)
	}
	return nil
}
