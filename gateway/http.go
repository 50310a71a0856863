package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/lockio/web"
)

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !g.Ready() {
			http.Error(w, "not ready: starting or stopping", http.StatusServiceUnavailable)
			return
		}
		if h := g.store.Health(); h.Degraded {
			http.Error(w, storeDegraded(h), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(g.status())
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		g.writeMetrics(w)
	})
	if g.sim != nil {
		mux.Handle("/sim/", web.SameOrigin(g.sim.Handler())) // no POST from another origin's page
	}
	mux.Handle("/", g.web.Handler()) // the locker page, the kiosk and their API (lockio/web)
	return bodyDeadline(mux)
}

// storeDegraded is the /readyz body while the store fails to commit.
func storeDegraded(h store.Health) string {
	msg := fmt.Sprintf("not ready: store degraded (%s) since %s: %d commits failed, %d writes held for retry",
		h.Reason, h.Since.UTC().Format(time.RFC3339), h.Failures, h.Pending)
	if h.Reason == store.FailureNoSpace {
		msg += "; free space on the data dir's filesystem"
	}
	if h.Err != nil {
		msg += "; last error: " + h.Err.Error()
	}
	return msg
}

// writeMetrics writes every metric of the gateway in Prometheus text format,
// each family after its # HELP and # TYPE lines.
func (g *Gateway) writeMetrics(w io.Writer) {
	var in, out bytes.Buffer
	metrics.WriteProcessMetrics(&in)
	g.metrics.WritePrometheus(&in)
	out.Grow(in.Len() + 8<<10)
	for line := range bytes.Lines(in.Bytes()) {
		if name, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
			family := string(bytes.TrimSpace(name))
			if help, ok := metricHelp[family]; ok {
				out.WriteString("# HELP " + family + " " + helpEscaper.Replace(help) + "\n")
				continue
			}
		}
		out.Write(line)
	}
	w.Write(out.Bytes())
}

// helpEscaper escapes a # HELP text as the text format wants.
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// metricHelp is the # HELP text of every locky_ family, whichever package
// registers it; VictoriaMetrics/metrics writes the # TYPE lines and an empty
// # HELP, which this text fills. The names follow one scheme,
// locky_<subsystem>_<what>_<unit>[_total]: the unit in the plural where the
// value has one (seconds, bytes, messages), _total on counters and only
// there, and the outcome of an operation is a label of its family (result;
// reason for what is refused or dropped; status for a state), never a family
// of its own. README.md lists the families; TestMetricsExistFromTheStart
// holds this map, that list and /metrics to each other.
var metricHelp = map[string]string{
	"locky_build_info":             "The gateway's version and commit, as labels; always 1.",
	"locky_gateway_uptime_seconds": "Time since the gateway process started.",
	"locky_gateway_ready":          "1 while the gateway serves: broker listening, store open, handlers subscribed.",

	"locky_http_connections_refused_total": "HTTP connections closed on accept: the gateway had its maximum (128) open.",

	"locky_broker_clients_connected":               "MQTT clients connected to the local broker, the gateway's own handlers not counted.",
	"locky_broker_subscriptions":                   "Subscriptions on the local broker.",
	"locky_broker_retained_messages":               "Retained messages the local broker holds.",
	"locky_broker_inflight_messages":               "QoS 1 and 2 messages sent to clients and not yet acknowledged.",
	"locky_broker_messages_received_total":         "PUBLISH packets the local broker received from clients.",
	"locky_broker_messages_sent_total":             "PUBLISH packets the local broker sent to clients.",
	"locky_broker_messages_dropped_total":          "Messages to a slow client dropped, by reason: queue_full (its write queue was full), inflight_full (too many unacknowledged).",
	"locky_broker_bytes_received_total":            "Bytes the local broker received from clients.",
	"locky_broker_bytes_sent_total":                "Bytes the local broker sent to clients.",
	"locky_broker_connections_open":                "TCP connections open to the local broker.",
	"locky_broker_connections_connecting":          "Connections to the local broker that have not yet delivered their CONNECT.",
	"locky_broker_connections_refused_total":       "Connections to the local broker refused by a limit, by reason.",
	"locky_broker_slow_clients_disconnected_total": "Clients disconnected because they stopped reading: more than 1 MiB queued to them (queue_full) or a write stuck for 10 s (write_timeout).",
	"locky_broker_auth_failures_total":             "Clients refused by the local broker's authentication or ACL, by reason.",
	"locky_broker_packets_too_large_total":         "Clients disconnected for a packet over the maximum packet size.",
	"locky_broker_retained_refused_total":          "Retained publishes on a new topic refused past the retained-message limit.",
	"locky_broker_log_lines_suppressed_total":      "Log lines of the local broker left out by the rate limit.",

	"locky_broker_publishes_refused_total":     "Client publishes refused, by reason: retained outside door states, topic name too long.",
	"locky_broker_subscriptions_refused_total": "Client subscription filters refused, by reason: too many for the client, filter too long.",

	"locky_workflow_code_attempts_total":     "Codes entered on the screen, by the answer shown (result).",
	"locky_workflow_code_to_command_seconds": "Time from a code received to the open command published to its door.",
	"locky_workflow_code_to_open_seconds":    "Time from a code received to its door reporting open.",
	"locky_workflow_door_cycles_total":       "Door cycles completed: opened for a code, then closed.",
	"locky_workflow_door_faults_total":       "Doors that did not open in time or reported a fault.",
	"locky_workflow_door_left_open_total":    "Doors left open past the alarm time.",
	"locky_workflow_door_forced_open_total":  "Doors reported open with no command in flight.",
	"locky_workflow_lockouts_total":          "Screen lockouts after too many invalid codes.",

	"locky_store_reservations":                    "Reservations in the database, by status.",
	"locky_store_db_size_bytes":                   "Size of the database file.",
	"locky_store_commit_seconds":                  "Time of each write transaction of the database, its fsync included.",
	"locky_store_downstream_messages_total":       "Messages from the back-end on locky/down/*, by result: accepted, rejected (acked with an error), failed (the store could not commit it: acked with that error, at once or once it could be).",
	"locky_store_degraded":                        "1 while a commit of the database fails or writes that failed are held for retry (a full disk); 0 otherwise.",
	"locky_store_pending_writes":                  "Writes that failed to commit, held for retry with back-off: door closings, events, lockout state, acks.",
	"locky_store_commit_failures_total":           "Commits of the database that failed, by reason: no_space (the filesystem is full), io (the storage fails), other.",
	"locky_store_previous_code_key_matches_total": "Codes found under the previous code key during a key rotation.",

	"locky_outbox_messages":                "Upstream messages in the outbox, not yet acknowledged by the cloud broker.",
	"locky_outbox_bytes":                   "Bytes of the upstream messages in the outbox.",
	"locky_outbox_oldest_age_seconds":      "Age of the oldest message in the outbox; 0 when it is empty.",
	"locky_outbox_dropped_total":           "Outbox messages dropped, by reason: bytes or age (the outbox limits), unmapped (no bridge mapping matches).",
	"locky_outbox_delivered_total":         "Outbox messages removed after the cloud broker's PUBACK (QoS 0: once sent); with locky_outbox_dropped_total, every message the outbox took, once it is empty.",
	"locky_bridge_link_up":                 "1 while the bridge is connected to the cloud broker, online published and subscribed.",
	"locky_bridge_link_down_seconds":       "Time since the link to the cloud broker went down; 0 while it is up.",
	"locky_bridge_inflight_messages":       "Upstream messages published to the cloud broker and not yet acknowledged.",
	"locky_bridge_connects_total":          "Connection attempts to the cloud broker, by result: ok, failed (dial, TLS, refused CONNECT).",
	"locky_bridge_messages_sent_total":     "Upstream PUBLISH packets sent to the cloud broker, resends included.",
	"locky_bridge_pubacks_total":           "The cloud broker's PUBACKs, by result: accepted (the message leaves the outbox), rejected (kept, sent again).",
	"locky_bridge_messages_received_total": "Downstream messages from the cloud broker, by result: delivered (committed locally, then acked), unmapped (no mapping: acked, dropped), dropped (QoS 0, too many waiting).",

	"locky_bridge_downstream_retrying":         "1 while a downstream message that the locker could not commit is retried; the link stays up, the messages behind it wait unacked.",
	"locky_bridge_downstream_waiting_messages": "Downstream messages received from the cloud broker and not yet committed locally.",
	"locky_bridge_downstream_retries_total":    "Failed local deliveries of downstream messages, each retried with back-off.",

	"locky_metrics_pushes_total": "Pushes of these metrics to VictoriaMetrics, by result: ok, failed (its samples are dropped).",
}

// registerMetrics adds the process-wide and store gauges. Store figures come
// from one read of the database per second at most, however many gauges ask.
// It also turns on the # TYPE and # HELP lines of VictoriaMetrics/metrics,
// a setting of the whole process.
func (g *Gateway) registerMetrics() {
	metrics.ExposeMetadata(true)
	s := g.metrics
	version, commit := Build()
	s.NewGauge(`locky_build_info{version="`+version+`",commit="`+commit+`"}`, func() float64 { return 1 })
	s.NewGauge("locky_gateway_uptime_seconds", func() float64 { return time.Since(g.started).Seconds() })
	s.NewGauge("locky_gateway_ready", func() float64 {
		if g.Ready() {
			return 1
		}
		return 0
	})
}

// The HTTP server's limits. A client that sends a request's headers and
// never its body held a connection, and a file descriptor, for ever: 20 400
// such connections took every descriptor of the process, the broker's too.
const (
	// httpMaxConns bounds the HTTP connections open at once; past it, a new
	// one is accepted and closed at once, counted in
	// locky_http_connections_refused_total. The pages, the kiosk and a
	// scraper need a handful.
	httpMaxConns = 128
	// httpBodyTimeout bounds the reading of a request's body, from the end
	// of its headers (which ReadHeaderTimeout bounds). Not the server's
	// ReadTimeout: net/http cancels a request's context when its
	// background read hits that deadline, which would end the pages'
	// event streams.
	httpBodyTimeout = 10 * time.Second
	// httpIdleTimeout closes a kept-alive connection with no request.
	httpIdleTimeout = 60 * time.Second
)

// bodyDeadline gives a request with a body httpBodyTimeout to send it; the
// deadline goes once the body is read, so that a slow answer (a kiosk code
// waits for its door) is not cut. A body the handler leaves unread, which
// net/http discards after it, is bounded by the same deadline.
func bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(httpBodyTimeout)); err != nil {
			http.Error(w, fmt.Sprintf("cannot bound the body read: %v", err), http.StatusInternalServerError)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline once its body is read to the end.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{}) // fails only on a closed connection, which the next read says
	}
	return n, err
}

// limitListener accepts at most max connections open at once; past that it
// closes a new connection at once and counts it.
type limitListener struct {
	net.Listener
	slots   chan struct{}
	refused *metrics.Counter
}

func newLimitListener(ln net.Listener, max int, refused *metrics.Counter) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), refused: refused}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.refused.Inc()
			_ = c.Close() // a refused connection: nothing to report of its close
		}
	}
}

// limitConn frees its slot of the limitListener when closed, once, just
// before the close: a client that sees its connection closed finds the slot
// free.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
