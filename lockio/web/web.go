package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

//go:embed assets
var assets embed.FS

// Store is what the pages read of the locker's state, in the contract's
// types: the pages only show a reservation's id, door and status, never its
// codes.
type Store interface {
	Doors() ([]contract.Door, error)
	// ActiveReservation is the reservation that holds door (arriving or
	// stored), nil when none does.
	ActiveReservation(door int) (*contract.ReservationState, error)
	Reservations() ([]contract.ReservationState, error)
	OutboxDepth() (int, error) // messages waiting for the cloud
}

// Broker is what the pages need of the local broker: the door states, events
// and acks to follow, and downstream messages for the test helpers.
type Broker interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	Subscribe(filter string, fn func(contract.Message)) error
}

// SubmitFunc enters a code as the touchscreen does and returns the locker's
// answer (the screen handler's Submit).
type SubmitFunc func(ctx context.Context, code string) (contract.Display, error)

// Config configures the pages.
type Config struct {
	Store  Store      // required
	Broker Broker     // required
	Submit SubmitFunc // required
	// CloseDoor closes a simulated door, as a person pushing it shut. Nil
	// means the doors are real: the tiles are not clickable.
	CloseDoor func(door int) error
	// Clients returns the number of clients of the local broker. Nil means
	// the figure is not shown.
	Clients func() int64
	// BridgeUp reports whether the link to the cloud broker is up. Nil means
	// there is no bridge.
	BridgeUp func() bool

	LockerID string    // shown in the status strip
	Version  string    // shown in the status strip
	Started  time.Time // the gateway's start, for the uptime; zero means when New ran
	// Dev enables the test helpers of the locker page; without it their
	// routes answer 404.
	Dev bool

	SubmitTimeout time.Duration // how long a kiosk code waits for its answer; 0 means 10 s
	AckTimeout    time.Duration // how long a test helper waits for an ack; 0 means 10 s
	ResetAfter    time.Duration // the kiosk clears a result after this; 0 means 6 s
	// StatusEvery is how often the figures that change without a message
	// (broker clients, bridge link, outbox depth, uptime) are refreshed for
	// the open pages; 0 means 5 s.
	StatusEvery time.Duration
	Logger      *slog.Logger // nil means slog.Default()
}

// Web serves the pages. Create it with New; Close it before shutting the
// HTTP server down, since it ends the event streams that would keep it busy.
type Web struct {
	cfg   Config
	log   *slog.Logger
	mux   *http.ServeMux
	pages *template.Template

	mu      sync.Mutex
	states  map[int]contract.DoorState
	faults  map[int]string // door → reason of a fault its state does not show (see onEvent)
	last    *contract.Event
	clients map[chan []byte]struct{}
	acks    contract.Replies[contract.Ack] // by msg_id, for the test helpers
	closed  bool

	dirty     chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New validates cfg and builds the pages; nothing runs before Start.
func New(cfg Config) (*Web, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("web: Config.Store is required")
	case cfg.Broker == nil:
		return nil, errors.New("web: Config.Broker is required")
	case cfg.Submit == nil:
		return nil, errors.New("web: Config.Submit is required (the screen handler's Submit)")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.SubmitTimeout, 10*time.Second)
	def(&cfg.AckTimeout, 10*time.Second)
	def(&cfg.ResetAfter, 6*time.Second)
	def(&cfg.StatusEvery, 5*time.Second)
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pages, err := template.ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, fmt.Errorf("web: cannot parse the pages: %w", err)
	}
	w := &Web{
		cfg: cfg, log: cfg.Logger.With("component", "web"), pages: pages,
		states: map[int]contract.DoorState{}, faults: map[int]string{}, clients: map[chan []byte]struct{}{},
		dirty: make(chan struct{}, 1), done: make(chan struct{}),
	}
	w.routes()
	return w, nil
}

// Start subscribes to the door states, events and acks of the local broker
// and starts the goroutine that keeps the open pages up to date, until
// Close. Call it once, before serving Handler.
func (w *Web) Start(context.Context) error {
	for filter, fn := range map[string]func(contract.Message){
		contract.TopicDoorStates: w.onDoorState,
		contract.TopicEvents:     w.onEvent,
		contract.TopicAcks:       w.onAck,
	} {
		if err := w.cfg.Broker.Subscribe(filter, fn); err != nil {
			return fmt.Errorf("web: cannot subscribe to %s: %w", filter, err)
		}
	}
	w.wg.Add(1)
	go w.refreshLoop()
	return nil
}

// Handler serves the pages and their API.
func (w *Web) Handler() http.Handler { return w.mux }

// Close ends the event streams and stops the refresh goroutine. It is
// idempotent. The broker subscriptions stay but do nothing afterwards.
func (w *Web) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		close(w.done)
		w.wg.Wait()
	})
	return nil
}

func (w *Web) routes() {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", noHTML(http.FileServerFS(static))))
	mux.HandleFunc("GET /{$}", w.page("locker.html"))
	mux.HandleFunc("GET /kiosk", w.page("kiosk.html"))
	mux.HandleFunc("GET /events", w.events)
	mux.HandleFunc("GET /api/state", func(rw http.ResponseWriter, _ *http.Request) {
		b, err := w.state()
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.Write(b)
	})
	mux.Handle("POST /api/kiosk/code", SameOrigin(http.HandlerFunc(w.kioskCode)))
	mux.Handle("POST /api/doors/{door}/close", SameOrigin(http.HandlerFunc(w.closeDoor)))
	if w.cfg.Dev {
		mux.Handle("POST /api/test/reservations", SameOrigin(http.HandlerFunc(w.createTestReservation)))
		mux.Handle("POST /api/test/cleanup", SameOrigin(http.HandlerFunc(w.cleanupTestData)))
	}
	w.mux = mux
}

// SameOrigin refuses what a web page of another origin can make a browser
// send to next, which serves POST controls with no login (the kiosk's code,
// the simulator, the test helpers):
//
//   - 403 when the browser says the request is not the page's own
//     (Sec-Fetch-Site other than same-origin or none), or its Origin header
//     is not the gateway's own (the scheme, host and port of the request);
//   - 415 when a body comes with a Content-Type other than application/json.
//     A page of another origin can send that type only after a CORS
//     preflight, which the gateway never answers; a form or a text/plain
//     fetch is refused here, before its body is read.
//
// A POST without a body and without a Content-Type (curl -X POST) passes: a
// browser sends an Origin header with every cross-origin POST. GET, HEAD and
// OPTIONS pass untouched. A process on the locker itself can still post as
// the touchscreen does: this is the touchscreen's API (README.md, threat
// model).
func SameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(rw, r)
			return
		}
		switch site := r.Header.Get("Sec-Fetch-Site"); site {
		case "", "same-origin", "none":
		default:
			http.Error(rw, "refused: a request from another site ("+site+")", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !ownOrigin(r, o) {
			http.Error(rw, fmt.Sprintf("refused: Origin %q is not this gateway's", o), http.StatusForbidden)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct != "" || r.ContentLength != 0 {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				http.Error(rw, fmt.Sprintf("refused: Content-Type %q; want application/json", ct), http.StatusUnsupportedMediaType)
				return
			}
		}
		next.ServeHTTP(rw, r)
	})
}

// ownOrigin reports whether origin has the scheme, host and port of r.
func ownOrigin(r *http.Request, origin string) bool {
	o, err := url.Parse(origin)
	if err != nil || o.Host == "" || o.Path != "" || o.User != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if !strings.EqualFold(o.Scheme, scheme) {
		return false
	}
	oh, op := splitHostPort(o.Host, scheme)
	rh, rp := splitHostPort(r.Host, scheme)
	return oh != "" && strings.EqualFold(oh, rh) && op == rp
}

// splitHostPort splits a Host header, the port defaulting to the scheme's.
func splitHostPort(hostport, scheme string) (host, port string) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), ""
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return host, port
}

// noHTML keeps the page templates out of the static files.
func noHTML(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if len(r.URL.Path) >= 5 && r.URL.Path[len(r.URL.Path)-5:] == ".html" {
			http.NotFound(rw, r)
			return
		}
		h.ServeHTTP(rw, r)
	})
}

// pageData is what the page templates show before the first event arrives.
type pageData struct {
	LockerID     string
	Version      string
	Dev          bool
	ResetAfterMS int64
}

func (w *Web) page(name string) http.HandlerFunc {
	return func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		rw.Header().Set("Cache-Control", "no-cache")
		err := w.pages.ExecuteTemplate(rw, name, pageData{
			LockerID: w.cfg.LockerID, Version: w.cfg.Version, Dev: w.cfg.Dev,
			ResetAfterMS: w.cfg.ResetAfter.Milliseconds(),
		})
		if err != nil {
			w.log.Error("cannot render a page", "page", name, "err", err)
		}
	}
}

// kioskCode enters a code as the touchscreen would and answers with the
// display message.
func (w *Web) kioskCode(rw http.ResponseWriter, r *http.Request) {
	if r.ContentLength > maxKioskBody { // said at once, not after waiting for a body
		http.Error(rw, fmt.Sprintf(`the body is over %d bytes; want {"code":"123456"}`, maxKioskBody), http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxKioskBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		http.Error(rw, fmt.Sprintf(`the body is over %d bytes; want {"code":"123456"}`, maxKioskBody), http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		http.Error(rw, fmt.Sprintf("cannot read the body: %v", err), http.StatusBadRequest)
		return
	}
	// The contract's decoder, as for locky/screen/code: a duplicate or
	// case-variant key would let two parsers read two different codes. A
	// request_id in the body is allowed and replaced by the kiosk's own,
	// which routes the answer back to this request.
	req, err := contract.DecodeCodeRequest(body)
	if err != nil {
		http.Error(rw, fmt.Sprintf(`%v; want {"code":"123456"}`, err), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), w.cfg.SubmitTimeout)
	defer cancel()
	d, err := w.cfg.Submit(ctx, req.Code)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusGatewayTimeout)
		return
	}
	writeJSON(rw, http.StatusOK, d)
}

// closeDoor closes a simulated door: POST /api/doors/{door}/close.
func (w *Web) closeDoor(rw http.ResponseWriter, r *http.Request) {
	if w.cfg.CloseDoor == nil {
		http.Error(rw, "the doors are not simulated: close the real door", http.StatusNotFound)
		return
	}
	door, err := strconv.Atoi(r.PathValue("door"))
	if err != nil || door <= 0 || door > contract.MaxDoor {
		http.Error(rw, fmt.Sprintf("door must be a number 1..%d", contract.MaxDoor), http.StatusBadRequest)
		return
	}
	if err := w.cfg.CloseDoor(door); err != nil {
		http.Error(rw, fmt.Sprintf("cannot close door %d: %v", door, err), http.StatusNotFound)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

// maxKioskBody bounds the body of a kiosk code request: a code request is a
// few dozen bytes.
const maxKioskBody = 4096

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}
