package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// connListener is the broker's TCP listener, in place of mochi's
// listeners.TCP, which in v2.7.9 sets no deadline before CONNECT, accepts any
// number of connections and logs each failed one as an unthrottled WARN line
// without a message. It bounds what a peer that has not authenticated costs:
//
//   - a connection must deliver its whole CONNECT packet within the connect
//     timeout (a deadline set at accept, not an idle timeout, so dribbling a
//     byte at a time does not help); mochi replaces the deadline with its
//     keepalive one once it has read the CONNECT;
//   - at most maxPerAddr connections may be open from one IP address; past
//     it a new connection is closed at once, before mochi allocates anything
//     for it (no MQTT reason code can be sent before the CONNECT says which
//     protocol version the peer speaks);
//   - at most maxConnecting connections may be still before their CONNECT;
//     past it a new connection evicts (closes) the oldest of them, so that
//     idle sockets from many addresses cannot keep a real client out: an
//     attacker must open connections faster than a real client delivers its
//     CONNECT, milliseconds after connecting;
//   - it watches the packet framing, so that an MQTT 5 client sending a
//     packet over the maximum packet size gets DISCONNECT 0x95 (mochi
//     closes without one);
//   - it counts and logs (with a message, throttled by the broker's log
//     handler) every connection refused before its session began.
//
// The connectLimits hook tells it when a connection's CONNECT has been read
// (connected) and when its session began (established).
type connListener struct {
	id  string
	ln  net.Listener
	lim Config // the connection limits, defaults filled
	met *brokerMetrics
	// tooLarge is called on the reading goroutine of an MQTT 5 client that
	// announced a packet over the maximum packet size.
	tooLarge func(*mqtt.Client)
	log      *slog.Logger

	mu         sync.Mutex
	conns      map[*limitedConn]struct{}
	perAddr    map[string]int
	connecting int
	seq        uint64 // of the last connection admitted
	closed     bool
	wg         sync.WaitGroup // Serve and the connections it started
}

func newConnListener(ln net.Listener, lim Config, met *brokerMetrics, tooLarge func(*mqtt.Client)) *connListener {
	return &connListener{id: "tcp", ln: ln, lim: lim, met: met, tooLarge: tooLarge,
		conns: map[*limitedConn]struct{}{}, perAddr: map[string]int{}}
}

func (l *connListener) ID() string       { return l.id }
func (l *connListener) Address() string  { return l.ln.Addr().String() }
func (l *connListener) Protocol() string { return "tcp" }

// Init takes mochi's logger for the listener.
func (l *connListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

// Serve accepts connections until Close and hands each one within the
// limits to mochi.
func (l *connListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors, say: mochi's listener stops
			// accepting for good here; keep trying, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Error("cannot accept MQTT connections; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		lc, evicted, reason := l.admit(c)
		if lc == nil {
			_ = c.Close()
			l.refused(reason, addrOf(c), nil)
			continue
		}
		if evicted != nil {
			_ = evicted.Close() // its goroutine counts it
		}
		go func() {
			defer l.wg.Done()
			err := establish(l.id, lc)
			_ = lc.Close()
			if reason := lc.failure(err); reason != "" {
				l.refused(reason, lc.addr, err)
			}
		}()
	}
}

// admit returns the connection wrapped and counted, and the connection it
// evicts for it (to be closed) if any; or nil and why it is refused.
func (l *connListener) admit(c net.Conn) (lc, evicted *limitedConn, reason string) {
	addr := addrOf(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return nil, nil, reasonShuttingDown
	case l.perAddr[addr] >= l.lim.MaxPerAddr:
		return nil, nil, reasonMaxPerAddr
	}
	if err := c.SetDeadline(time.Now().Add(l.lim.ConnectTimeout)); err != nil {
		return nil, nil, reasonBadConnect
	}
	if l.connecting >= l.lim.MaxConnecting {
		evicted = l.oldestConnecting()
		if evicted == nil {
			return nil, nil, reasonMaxConnecting
		}
		evicted.evicted.Store(true)
		evicted.connecting = false
		l.connecting--
	}
	l.seq++
	lc = &limitedConn{Conn: c, l: l, addr: addr, frames: frameWatch{max: l.lim.MaxPacketSize}, connecting: true, seq: l.seq}
	l.conns[lc] = struct{}{}
	l.perAddr[addr]++
	l.connecting++
	l.wg.Add(1)
	return lc, evicted, ""
}

// oldestConnecting returns the connection admitted first of those still
// before their CONNECT. The caller holds l.mu.
func (l *connListener) oldestConnecting() *limitedConn {
	var oldest *limitedConn
	for c := range l.conns {
		if c.connecting && (oldest == nil || c.seq < oldest.seq) {
			oldest = c
		}
	}
	return oldest
}

// connected moves c out of the connections still before their CONNECT.
func (l *connListener) connected(c *limitedConn, cl *mqtt.Client) {
	c.client.Store(cl)
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.connecting {
		c.connecting = false
		l.connecting--
	}
}

// release forgets a closed connection.
func (l *connListener) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; !ok {
		return
	}
	delete(l.conns, c)
	if c.connecting {
		c.connecting = false
		l.connecting--
	}
	if l.perAddr[c.addr]--; l.perAddr[c.addr] <= 0 {
		delete(l.perAddr, c.addr)
	}
}

// counts returns the open connections and those still before their CONNECT.
func (l *connListener) counts() (open, connecting int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns), l.connecting
}

// refused counts and logs a connection that ended before its session began.
func (l *connListener) refused(reason, addr string, err error) {
	if reason == reasonShuttingDown {
		return
	}
	l.met.refused[reason].Inc()
	level := slog.LevelWarn
	if reason == reasonBadConnect {
		level = slog.LevelInfo // port probes and health checks end so too
	}
	args := []any{"reason", reason, "remote", addr}
	if err != nil {
		args = append(args, "err", err)
	}
	l.log.Log(context.Background(), level, refusedMessages[reason], args...)
}

// Close closes the listener and every connection mochi does not close
// itself (those before their session), and waits for their goroutines, so
// that mochi's wait for its clients cannot hang on an idle connection.
func (l *connListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		return
	}
	closeClients(l.id)
	_ = l.ln.Close()
	l.mu.Lock()
	open := make([]*limitedConn, 0, len(l.conns))
	for c := range l.conns {
		open = append(open, c)
	}
	l.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
	l.wg.Wait()
}

// The reasons of locky_broker_connections_refused_total: a bounded set.
const (
	reasonMaxConnecting  = "max_connecting" // none before its CONNECT to evict
	reasonEvicted        = "evicted"        // closed before its CONNECT for a newer connection
	reasonMaxPerAddr     = "max_per_addr"
	reasonConnectTimeout = "connect_timeout"
	reasonBadConnect     = "bad_connect"
	reasonMaxClients     = "max_clients"
	reasonConnectRate    = "connect_rate"
	reasonShuttingDown   = "shutting_down" // not counted
)

var refusedReasons = []string{reasonMaxConnecting, reasonEvicted, reasonMaxPerAddr, reasonConnectTimeout,
	reasonBadConnect, reasonMaxClients, reasonConnectRate}

// refusedMessages are the log lines, one per reason so that the log
// throttle keeps each kind apart; each says what to raise if it is not an
// attack.
var refusedMessages = map[string]string{
	reasonMaxConnecting:  "MQTT connection refused: too many connections are still before their CONNECT (raise --mqtt-max-clients if this is no attack)",
	reasonEvicted:        "MQTT connection closed before its CONNECT: too many connections were before their CONNECT, and it was the oldest (raise --mqtt-max-clients if this is no attack)",
	reasonMaxPerAddr:     "MQTT connection refused: too many connections from this address (raise --mqtt-max-per-addr if this is no attack)",
	reasonConnectTimeout: "MQTT connection closed: no complete CONNECT within --mqtt-connect-timeout",
	reasonBadConnect:     "MQTT connection closed before a valid CONNECT",
	reasonMaxClients:     "MQTT client refused with server busy: --mqtt-max-clients clients are connected",
	reasonConnectRate:    "MQTT client refused: this address connects too often",
}

// failure names why the connection ended, given mochi's error, if it was
// refused by the listener's or connectLimits' limits or by mochi before its
// CONNECT was accepted. It returns "" for a session that began, and for a
// CONNECT refused by a later hook (the authentication counts and logs its
// own refusals).
func (c *limitedConn) failure(err error) string {
	var code packets.Code
	switch {
	case c.established.Load():
		return ""
	case c.rateRefused.Load():
		return reasonConnectRate
	case c.client.Load() != nil:
		return ""
	case c.evicted.Load():
		return reasonEvicted
	case errors.Is(err, os.ErrDeadlineExceeded):
		return reasonConnectTimeout
	case errors.As(err, &code) && code.Code == packets.ErrServerBusy.Code:
		return reasonMaxClients
	}
	return reasonBadConnect
}

// addrOf returns the IP address of a connection's peer.
func addrOf(c net.Conn) string { return hostOf(c.RemoteAddr().String()) }

// hostOf returns the host of a "host:port".
func hostOf(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return hostport
}

// limitedConn is a connection the listener counts until it is closed.
type limitedConn struct {
	net.Conn
	l           *connListener
	addr        string
	frames      frameWatch // touched by the reading goroutine only
	client      atomic.Pointer[mqtt.Client]
	established atomic.Bool
	rateRefused atomic.Bool
	evicted     atomic.Bool
	connecting  bool   // guarded by l.mu
	seq         uint64 // order of admission
	closeOnce   sync.Once
	closeErr    error
}

// Read passes the bytes read through the frame watch.
func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.frames.tooLarge(p[:n]) {
		c.l.met.tooLarge.Inc()
		if cl := c.client.Load(); cl != nil && cl.Properties.ProtocolVersion == 5 {
			// mochi reads the same header from these bytes and closes;
			// the DISCONNECT is written before it can.
			c.l.tooLarge(cl)
		}
	}
	return n, err
}

// Close closes the connection once and releases its place.
func (c *limitedConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		c.l.release(c)
	})
	return c.closeErr
}

// frameWatch follows the MQTT fixed headers in a byte stream and reports the
// first packet whose size exceeds max, by mochi's own rule (remaining length
// + 1 > max, clients.go ReadFixedHeader).
type frameWatch struct {
	max    uint32
	state  byte   // frameType, frameLength, frameBody, or frameDone
	length uint32 // remaining length decoded so far
	shift  uint
	body   uint32 // body bytes still to skip
}

const (
	frameType byte = iota
	frameLength
	frameBody
	frameDone // a packet too large, or a malformed length: mochi ends the connection
)

// tooLarge consumes p and reports whether it completed the fixed header of
// a packet over max.
func (f *frameWatch) tooLarge(p []byte) bool {
	for len(p) > 0 {
		switch f.state {
		case frameDone:
			return false
		case frameType:
			p = p[1:]
			f.state, f.length, f.shift = frameLength, 0, 0
		case frameLength:
			b := p[0]
			p = p[1:]
			f.length |= uint32(b&0x7f) << f.shift
			f.shift += 7
			switch {
			case b&0x80 != 0 && f.shift >= 28:
				f.state = frameDone // malformed: over four length bytes
			case b&0x80 != 0:
			case f.max > 0 && f.length+1 > f.max:
				f.state = frameDone
				return true
			case f.length == 0:
				f.state = frameType
			default:
				f.state, f.body = frameBody, f.length
			}
		case frameBody:
			n := min(uint32(len(p)), f.body)
			p = p[n:]
			if f.body -= n; f.body == 0 {
				f.state = frameType
			}
		}
	}
	return false
}
