package metricspush

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// DefaultInterval is how often metrics are pushed when Config.Interval is 0.
const DefaultInterval = 30 * time.Second

// Config configures a Pusher. The zero value of each optional field means
// what its comment says.
type Config struct {
	// URL is the VictoriaMetrics import endpoint, e.g.
	// http://victoriametrics:8428/api/v1/import/prometheus (vminsert:
	// http://host:8480/insert/0/prometheus/api/v1/import/prometheus). Its
	// query may carry more extra_label=name=value pairs. Required.
	URL string
	// LockerID is added to every pushed sample as the label locker="<id>".
	// Required.
	LockerID string
	// Write writes the metrics to push in the Prometheus text format, e.g.
	// metrics.WriteProcessMetrics followed by (*metrics.Set).WritePrometheus.
	// It is called once per push, from the Pusher's goroutine. Required.
	Write func(w io.Writer)
	// Interval is the time between two pushes. Zero means 30 s.
	Interval time.Duration
	// Timeout bounds one push, connection included. Zero means Interval,
	// at most 30 s.
	Timeout time.Duration
	// Metrics receives locky_metrics_pushes_total{result="ok"|"failed"},
	// each push counted once its result is known. Pass the set that Write
	// writes, so that each push carries the results of those before it. Nil
	// means a private set.
	Metrics *metrics.Set
	// Client sends the pushes. Nil means a client of its own with Timeout.
	Client *http.Client
	// Logger receives the push errors. Nil means slog.Default().
	Logger *slog.Logger
	// LogEvery rate-limits the error log to one line per period, with the
	// count of failures left out. Zero means 1 min.
	LogEvery time.Duration
}

// Pusher pushes a locker's metrics to VictoriaMetrics every Interval.
type Pusher struct {
	cfg    Config
	url    string
	log    *slog.Logger
	pushes *metrics.Counter // result="ok"
	errs   *metrics.Counter // result="failed"

	mu       sync.Mutex // serialises pushes and guards the log throttle
	failing  int        // consecutive failures
	lastLog  time.Time
	unlogged int // failures since the last error line

	life    sync.Mutex // guards started and closed
	started bool
	closed  bool
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when Run returns
	own     bool          // the client is the Pusher's own: Close closes its connections
}

// New validates cfg and fills its defaults. Nothing is sent before Run or Push.
func New(cfg Config) (*Pusher, error) {
	if cfg.URL == "" {
		return nil, errors.New("metricspush: URL is required (e.g. http://victoriametrics:8428/api/v1/import/prometheus)")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("metricspush: URL %q: want http(s)://host:port/api/v1/import/prometheus", cfg.URL)
	}
	if cfg.LockerID == "" || strings.ContainsAny(cfg.LockerID, "\"\\\n") {
		return nil, fmt.Errorf("metricspush: LockerID %q: must be set, without quotes, backslashes or newlines", cfg.LockerID)
	}
	if cfg.Write == nil {
		return nil, errors.New("metricspush: Write is required: the function that writes the metrics text")
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.LogEvery < 0 {
		return nil, errors.New("metricspush: Interval, Timeout and LogEvery must not be negative")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = min(cfg.Interval, 30*time.Second)
	}
	if cfg.LogEvery == 0 {
		cfg.LogEvery = time.Minute
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	own := cfg.Client == nil
	if own {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	q := u.Query()
	q.Add("extra_label", "locker="+cfg.LockerID)
	u.RawQuery = q.Encode()
	return &Pusher{
		cfg:    cfg,
		url:    u.String(),
		log:    cfg.Logger.With("component", "metricspush"),
		pushes: cfg.Metrics.GetOrCreateCounter(`locky_metrics_pushes_total{result="ok"}`),
		errs:   cfg.Metrics.GetOrCreateCounter(`locky_metrics_pushes_total{result="failed"}`),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		own:    own,
	}, nil
}

// ErrRunTwice is returned by Run when it was already called.
var ErrRunTwice = errors.New("metricspush: Run called twice; use one Pusher per loop")

// Run pushes at once, then every Interval, until ctx ends or Close is called.
// It returns nil then: a failed push is counted and logged, not returned.
// After Close it returns at once.
func (p *Pusher) Run(ctx context.Context) error {
	p.life.Lock()
	if p.started {
		p.life.Unlock()
		return ErrRunTwice
	}
	p.started = true
	closed := p.closed
	p.life.Unlock()
	defer close(p.done)
	if closed {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		_ = p.Push(ctx) // counted and logged by Push
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Push sends the current metrics once and returns why it failed, if it did.
// The failure is also counted and logged (rate-limited).
func (p *Pusher) Push(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.send(ctx)
	if err != nil {
		p.errs.Inc()
		p.failing++
		p.unlogged++
		if now := time.Now(); now.Sub(p.lastLog) >= p.cfg.LogEvery {
			p.log.Warn("cannot push metrics to VictoriaMetrics; the samples are dropped until a push succeeds",
				"url", redact(p.cfg.URL), "err", err, "failures_not_logged", p.unlogged-1, "failing_in_a_row", p.failing)
			p.lastLog, p.unlogged = now, 0
		}
		return err
	}
	p.pushes.Inc()
	if p.failing > 0 {
		p.log.Info("metrics push works again", "url", redact(p.cfg.URL), "failed_in_a_row", p.failing)
		p.failing, p.unlogged, p.lastLog = 0, 0, time.Time{}
	}
	return nil
}

func (p *Pusher) send(ctx context.Context) error {
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	p.cfg.Write(zw)
	if err := zw.Close(); err != nil {
		return fmt.Errorf("cannot compress the metrics: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return redactErr(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // only for the error message
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("VictoriaMetrics answered %s: %s (check the URL's path: /api/v1/import/prometheus)",
			resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// Close stops Run and waits for it to return. It may be called more than
// once, and before or without Run.
func (p *Pusher) Close() error {
	p.life.Lock()
	if !p.closed {
		p.closed = true
		close(p.stop)
	}
	started := p.started
	p.life.Unlock()
	if started {
		<-p.done
	}
	if p.own {
		p.cfg.Client.CloseIdleConnections()
	}
	return nil
}

// redact hides a password in the URL, for the log.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// redactErr hides a password of the URL that net/http puts in its errors.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redact(ue.URL)
	}
	return err
}
