package broker

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// brokerMetrics are the counters of what the broker's limits refused.
type brokerMetrics struct {
	refused         map[string]*metrics.Counter // by reason, refusedReasons
	tooLarge        *metrics.Counter
	retainedRefused *metrics.Counter
	logSuppressed   *metrics.Counter
}

func newBrokerMetrics(s *metrics.Set) *brokerMetrics {
	m := &brokerMetrics{
		refused:         map[string]*metrics.Counter{},
		tooLarge:        s.NewCounter("locky_broker_packets_too_large_total"),
		retainedRefused: s.NewCounter("locky_broker_retained_refused_total"),
		logSuppressed:   s.NewCounter("locky_broker_log_lines_suppressed_total"),
	}
	for _, r := range refusedReasons {
		m.refused[r] = s.NewCounter(`locky_broker_connections_refused_total{reason="` + r + `"}`)
	}
	return m
}

// The defaults of Config's limits, which the gateway's options show.
const (
	DefaultMaxClients     = 256
	DefaultMaxPerAddr     = 32
	DefaultMaxRetained    = 512
	DefaultConnectTimeout = 5 * time.Second
	DefaultMaxPerUser     = 8 // User.MaxClients
)

// fillLimits fills the defaults of the limits and checks them.
func (c *Config) fillLimits() error {
	fill := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	fill(&c.MaxClients, DefaultMaxClients)
	fill(&c.MaxConnecting, c.MaxClients)
	fill(&c.MaxPerAddr, DefaultMaxPerAddr)
	fill(&c.ConnectBurst, 32)
	fill(&c.MaxRetained, DefaultMaxRetained)
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ConnectEvery == 0 {
		c.ConnectEvery = 100 * time.Millisecond
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 8192
	}
	if c.MaxClients < 0 || c.MaxConnecting < 0 || c.MaxPerAddr < 0 || c.ConnectBurst < 0 || c.MaxRetained < 0 ||
		c.ConnectTimeout < 0 || c.ConnectEvery < 0 {
		return errors.New("broker: a connection or retained-message limit is negative; set --mqtt-max-clients, --mqtt-max-per-addr, --mqtt-connect-timeout and --mqtt-max-retained to positive values")
	}
	return nil
}

// connectLimits enforces the limits of a connection mochi has no option
// for. It is the first hook, so it sees every CONNECT mochi has read and
// validated before any password is checked:
//
//   - OnConnect tells the listener the CONNECT has been read, and refuses
//     an address that connects too often with CONNACK 0x9F Connection rate
//     exceeded (0x03 Server unavailable in MQTT 3.1.1, which has no rate
//     code);
//   - OnSessionEstablish tells the listener the session began;
//   - OnPacketEncode announces the maximum packet size in the CONNACK
//     (mochi v2.7.9 enforces it but does not send it).
type connectLimits struct {
	mqtt.HookBase
	srv           *mqtt.Server
	ln            *connListener
	rate          *connectRate
	maxPacketSize uint32
}

func (h *connectLimits) ID() string { return "locky-connect-limits" }

func (h *connectLimits) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnSessionEstablish || b == mqtt.OnPacketEncode
}

func (h *connectLimits) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	c, ok := cl.Net.Conn.(*limitedConn)
	if !ok {
		return nil
	}
	h.ln.connected(c, cl)
	if h.rate.allow(c.addr, time.Now()) {
		return nil
	}
	c.rateRefused.Store(true)
	code := packets.ErrConnectionRateExceeded
	if cl.Properties.ProtocolVersion < 5 {
		code = packets.ErrServerUnavailable // sent as 3.1.1's 0x03
	}
	if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
		return fmt.Errorf("refuse %s (connection rate): %w", cl.ID, err)
	}
	return packets.ErrConnectionRateExceeded
}

func (h *connectLimits) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if c, ok := cl.Net.Conn.(*limitedConn); ok {
		c.established.Store(true)
	}
}

func (h *connectLimits) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.MaximumPacketSize = h.maxPacketSize // encoded for MQTT 5 only
	}
	return pk
}

// retainLimit refuses a retained message on a new topic past max. It runs
// after the retain guard, under its lock, so the count it checks cannot
// change before mochi retains.
type retainLimit struct {
	mqtt.HookBase
	srv     *mqtt.Server
	max     int
	refused *metrics.Counter
}

func (h *retainLimit) ID() string { return "locky-retain-limit" }

func (h *retainLimit) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *retainLimit) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || len(pk.Payload) == 0 || cl.Net.Inline {
		return pk, nil // a deletion frees room; the gateway's own are never refused
	}
	if _, ok := h.srv.Topics.Retained.Get(pk.TopicName); ok || h.retained() < h.max {
		return pk, nil // a replacement takes no more room
	}
	h.refused.Inc()
	return pk, refusePublish(cl, pk, packets.ErrQuotaExceeded)
}

// retained returns the number of retained messages, mochi's own $SYS ones
// excepted.
func (h *retainLimit) retained() int {
	all := h.srv.Topics.Retained
	if all.Len() < h.max {
		return all.Len() // the $SYS ones would only lower it
	}
	n := 0
	for topic := range all.GetAll() {
		if !strings.HasPrefix(topic, "$SYS/") {
			n++
		}
	}
	return n
}

// refusePublish refuses a publish as mochi's ACL refuses one: MQTT 5 QoS 1
// and 2 get a PUBACK with code (mochi sends it for a hook's error code);
// QoS 0 is dropped; MQTT 3.1.1 QoS 1 and 2, which that protocol cannot
// refuse, are disconnected (mochi would publish them otherwise).
func refusePublish(cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	if pk.FixedHeader.Qos == 0 {
		return packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion == 5 {
		return code
	}
	cl.Stop(code)
	return packets.ErrRejectPacket
}

// The subscription limits of one network client: mochi v2.7.9 has none,
// and each filter costs its length in the topic index.
const (
	maxSubscriptions = 32  // filters subscribed at once
	maxFilterLen     = 256 // bytes of one filter
)

// The reasons of locky_broker_subscriptions_refused_total.
const (
	reasonTooMany       = "too_many"        // past maxSubscriptions: SUBACK 0x97 Quota exceeded
	reasonFilterTooLong = "filter_too_long" // over maxFilterLen: SUBACK 0x8F Topic filter invalid
)

// refusedFilter is a filter mochi refuses itself, as 0x8F Topic filter
// invalid ("#" not last): a refused filter is replaced by it, so that mochi
// neither indexes it nor asks the ACL.
const refusedFilter = "#/"

// subscriptionLimits refuses, filter by filter, a network client's filters
// over maxFilterLen and its new filters past maxSubscriptions (re-subscribing
// a filter it holds is never refused). MQTT 5 clients get SUBACK 0x97 for
// the latter: check notes them by client and packet id and answer rewrites
// the SUBACK mochi writes on the same goroutine. MQTT 3.1.1 clients get 0x80.
type subscriptionLimits struct {
	refused map[string]*metrics.Counter // by reason

	mu    sync.Mutex
	quota map[*mqtt.Client]quotaRefusal
}

// quotaRefusal is the filters of a SUBSCRIBE refused past maxSubscriptions.
type quotaRefusal struct {
	packetID uint16
	filters  []int
}

func newSubscriptionLimits(set *metrics.Set) *subscriptionLimits {
	l := &subscriptionLimits{refused: map[string]*metrics.Counter{}, quota: map[*mqtt.Client]quotaRefusal{}}
	for _, r := range []string{reasonTooMany, reasonFilterTooLong} {
		l.refused[r] = set.NewCounter(`locky_broker_subscriptions_refused_total{reason="` + r + `"}`)
	}
	return l
}

// check returns pk with the filters past the limits replaced by refusedFilter.
func (l *subscriptionLimits) check(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	n := cl.State.Subscriptions.Len()
	filters := make([]packets.Subscription, len(pk.Filters))
	copy(filters, pk.Filters)
	var quota []int
	for i, sub := range filters {
		_, held := cl.State.Subscriptions.Get(sub.Filter)
		switch {
		case len(sub.Filter) > maxFilterLen:
			l.refused[reasonFilterTooLong].Inc()
			filters[i].Filter = refusedFilter
		case held:
		case n >= maxSubscriptions:
			l.refused[reasonTooMany].Inc()
			filters[i].Filter = refusedFilter
			quota = append(quota, i)
		default:
			n++
		}
	}
	pk.Filters = filters
	if len(quota) > 0 && cl.Properties.ProtocolVersion == 5 {
		l.mu.Lock()
		l.quota[cl] = quotaRefusal{packetID: pk.PacketID, filters: quota}
		l.mu.Unlock()
	}
	return pk
}

// answer returns a SUBACK with 0x97 for the filters check refused past
// maxSubscriptions.
func (l *subscriptionLimits) answer(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	l.mu.Lock()
	q, ok := l.quota[cl]
	if ok && q.packetID == pk.PacketID {
		delete(l.quota, cl)
	}
	l.mu.Unlock()
	if !ok || q.packetID != pk.PacketID {
		return pk
	}
	codes := bytes.Clone(pk.ReasonCodes)
	for _, i := range q.filters {
		if i < len(codes) {
			codes[i] = packets.ErrQuotaExceeded.Code
		}
	}
	pk.ReasonCodes = codes
	return pk
}

// forget drops what check noted for a client that went away.
func (l *subscriptionLimits) forget(cl *mqtt.Client) {
	l.mu.Lock()
	delete(l.quota, cl)
	l.mu.Unlock()
}

// connectRate is a token bucket per address: burst connection attempts at
// once, then one per every. The table is bounded: full buckets (of
// addresses quiet for burst×every) are dropped when it fills, and while it
// is full of active addresses a new address is refused.
type connectRate struct {
	burst float64
	every time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxRateAddrs bounds the addresses connectRate remembers.
const maxRateAddrs = 4096

func newConnectRate(burst int, every time.Duration) *connectRate {
	return &connectRate{burst: float64(burst), every: every, buckets: map[string]*bucket{}}
}

// allow takes one attempt of addr at now, and reports whether it is within
// the rate.
func (r *connectRate) allow(addr string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[addr]
	if b == nil {
		if len(r.buckets) >= maxRateAddrs {
			for a, o := range r.buckets {
				if r.fill(o, now) >= r.burst {
					delete(r.buckets, a)
				}
			}
			if len(r.buckets) >= maxRateAddrs {
				return false
			}
		}
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[addr] = b
	}
	b.tokens, b.at = r.fill(b, now), now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// fill returns b's tokens at now.
func (r *connectRate) fill(b *bucket, now time.Time) float64 {
	return min(r.burst, b.tokens+float64(now.Sub(b.at))/float64(r.every))
}
