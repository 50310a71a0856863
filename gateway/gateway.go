// Package gateway assembles the locker: the embedded broker, the store, the
// handlers, the door driver, the bridge and the HTTP server, and runs them
// from start to graceful stop.
//
// Its place in the layering: the top; nothing imports it but the programs
// in gateway/cmd and the tests.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/gateway/logthrottle"
	"github.com/locky-edge/locky/gateway/metricspush"
	"github.com/locky-edge/locky/handlers/controller"
	"github.com/locky-edge/locky/handlers/door"
	"github.com/locky-edge/locky/handlers/screen"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/storehandler"
	"github.com/locky-edge/locky/lockio/simdoors"
	"github.com/locky-edge/locky/lockio/web"
)

// Version and Commit identify the build, stamped with -ldflags
// "-X github.com/locky-edge/locky/gateway.Version=… -X …gateway.Commit=…".
var (
	Version = "dev"
	Commit  = "unknown"
)

// Gateway is one locker's gateway.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	logs    *logthrottle.Handler // the throttle of log, flushed when the gateway stops
	metrics *metrics.Set
	started time.Time

	broker     *broker.Broker
	store      *store.Store
	controller *controller.Controller
	downstream *storehandler.Handler
	doors      *door.Handler
	sim        *simdoors.Bank
	boards     *banks // the lock boards of --door-map; nil without
	screen     *screen.Handler
	web        *web.Web
	bridge     *bridge.Bridge      // nil without --cloud-url
	push       *metricspush.Pusher // nil without --metrics-push-url
	httpLn     net.Listener
	httpRaw    net.Listener // httpLn's socket, for HandOver
	mqttLn     net.Listener // the broker's socket, for HandOver
	http       *http.Server
	httpDone   chan struct{} // closed when Serve returns; nil before Run serves

	// stops holds, in start order, how to stop each step that started and
	// is not stopped yet. Only New, then Run or Close (one at a time) use it.
	stops  []stopStep
	failed chan error // a part that stopped by itself: Run stops the gateway

	ready    atomic.Bool
	refused  atomic.Pointer[refusal] // the last upgrade refused, for /status
	readyCh  chan struct{}
	life     sync.Mutex // guards state and cancel
	state    lifeState
	cancel   context.CancelFunc // ends Run
	stopped  chan struct{}      // closed once everything is stopped
	closeErr error              // the stop steps' errors; read after stopped is closed
}

// lifeState is where a Gateway is in its life.
type lifeState int

const (
	opened  lifeState = iota // New returned it
	running                  // Run was called
	closed                   // Close was called before Run
)

// step is one step of the start list: start returns nil once it started,
// having recorded how to stop what it started (g.onStop), or an error after
// undoing what it did itself.
type step struct {
	name  string
	start func() error
}

// stopStep is how to stop one step that started.
type stopStep struct {
	name string
	stop func() error
}

// New opens what the gateway needs and binds its listeners: the first steps
// of the start list, in an order that reports a mistake (an unusable data
// dir, a bad key, a locked database, a busy port) before anything else is
// done. When a step fails, the steps before it are stopped, in reverse order,
// and New returns the error, which names what failed and the option to set.
func New(cfg Config, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	// Every component logs through one throttle: a client that makes one
	// write a line per message (a refused response topic, a rejected
	// downstream message) gets rootLogBurst of them per 10 s, then a summary.
	logs := logthrottle.New(log.Handler(), logthrottle.Config{Burst: rootLogBurst})
	log = slog.New(logs)
	g := &Gateway{cfg: cfg, log: log, logs: logs, metrics: metrics.NewSet(), started: time.Now(),
		stopped: make(chan struct{}), readyCh: make(chan struct{}), failed: make(chan error, 1)}
	var keys codeKeys
	err := g.startAll([]step{
		{"data dir", g.openDataDir},
		{"code keys", func() (err error) { keys, err = g.loadKeys(); return err }},
		{"store", func() error { return g.openStore(keys) }},
		{"http listener", g.listenHTTP},
		{"mqtt listener", g.newBroker},
		{"handlers", g.newHandlers},
		{"cloud bridge", g.newBridge},
		{"metrics push", g.newPush},
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// rootLogBurst is how many lines of one level and message the gateway's log
// takes per 10 s; above the broker's 10, so that a graceful stop logs each of
// its steps.
const rootLogBurst = 25

// startAll runs steps in order. When one fails, it stops every step started
// so far (New's ones included), in reverse order, and returns the error.
func (g *Gateway) startAll(steps []step) error {
	for _, s := range steps {
		t := time.Now()
		if err := s.start(); err != nil {
			g.log.Debug("start step failed; stopping what started", "step", s.name, "err", err)
			return errors.Join(err, g.stopAll(slog.LevelDebug))
		}
		g.log.Debug("started", "step", s.name, "took", time.Since(t).Round(time.Microsecond))
	}
	return nil
}

// onStop records how to stop a step that started.
func (g *Gateway) onStop(name string, stop func() error) {
	g.stops = append(g.stops, stopStep{name, stop})
}

// stopAll stops every step started and not stopped yet, the last started
// first, each once, logging its name and how long it took at level. A step
// that fails is logged and the others are stopped still; the failures are
// returned joined.
func (g *Gateway) stopAll(level slog.Level) error {
	var errs []error
	for len(g.stops) > 0 {
		s := g.stops[len(g.stops)-1]
		g.stops = g.stops[:len(g.stops)-1]
		t := time.Now()
		if err := s.stop(); err != nil {
			g.log.Error("stop step failed", "step", s.name, "err", err)
			errs = append(errs, fmt.Errorf("stopping %s: %w", s.name, err))
		}
		g.log.Log(context.Background(), level, "stopped", "step", s.name, "took", time.Since(t).Round(time.Microsecond))
	}
	return errors.Join(errs...)
}

// part is a handler: Start subscribes it to its topics and starts what it
// runs; Close stops that and waits for it.
type part interface {
	Start(ctx context.Context) error
	Close() error
}

// startPart is the step that starts p and records its Close.
func (g *Gateway) startPart(name string, p part) step {
	return step{name, func() error {
		if err := p.Start(context.Background()); err != nil {
			return fmt.Errorf("cannot start the %s: %w", name, err)
		}
		g.onStop(name, p.Close)
		return nil
	}}
}

// goStep runs fn on a goroutine of its own and records its stop: stop (if
// any) and the end of fn's context, then the wait for fn to return. An error
// from fn means the part stopped by itself: Run then stops the gateway.
func (g *Gateway) goStep(name string, fn func(context.Context) error, stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil {
			g.fail(fmt.Errorf("%s stopped: %w", name, err))
		}
	}()
	g.onStop(name, func() error {
		var err error
		if stop != nil {
			err = stop()
		}
		cancel()
		<-done
		return err
	})
}

// endless adapts a loop that runs until its context ends to goStep.
func endless(loop func(context.Context)) func(context.Context) error {
	return func(ctx context.Context) error { loop(ctx); return nil }
}

// fail tells Run that a part stopped by itself; Run returns the first such
// error, and the others are logged.
func (g *Gateway) fail(err error) {
	select {
	case g.failed <- err:
	default:
		g.log.Error("a part of the gateway stopped", "err", err)
	}
}

// openDataDir creates the data dir or checks the one there, and makes it
// private, so that a file in its place or a directory this user cannot write
// is said at once, not as the failure of what would write there first.
func (g *Gateway) openDataDir() error {
	if _, err := checkDataDirPath(g.cfg.DataDir); err != nil {
		return err
	}
	if err := prepareDataDir(g.cfg.DataDir, g.log); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	return checkDataDirWritable(g.cfg.DataDir)
}

func (g *Gateway) loadKeys() (codeKeys, error) {
	keys, err := loadCodeKeys(g.cfg, g.log)
	if err != nil {
		return keys, err
	}
	if !g.cfg.Dev && isExampleKey(keys.current) {
		return keys, fmt.Errorf("the code key (--code-key or --code-key-file): %w", errExampleKey)
	}
	return keys, nil
}

func (g *Gateway) openStore(keys codeKeys) error {
	st, err := store.Open(store.Config{
		Path:                 filepath.Join(g.cfg.DataDir, "locky.db"),
		CodeKey:              keys.current,
		PreviousCodeKey:      keys.previous,
		PreviousCodeKeyUntil: keys.previousUntil,
		OutboxMaxBytes:       g.cfg.OutboxMaxBytes,
		OutboxMaxAge:         g.cfg.OutboxMaxAge,
		Retention:            g.cfg.Retention,
		OnCommit:             g.publishLocal,
		Metrics:              g.metrics,
		Logger:               g.log,
	})
	if err != nil {
		return fmt.Errorf("--data-dir %s: %w", g.cfg.DataDir, err)
	}
	g.store = st
	g.onStop("store", g.store.Close)
	g.registerMetrics()
	return nil
}

// listenHTTP binds the HTTP address, or takes the socket systemd passed as
// "http"; Run serves it. Its stop closes the listener if Run did not serve it
// (Run's own step shuts the server down).
func (g *Gateway) listenHTTP() error {
	ln, from, err := inheritedListener(socketHTTP)
	switch {
	case err != nil:
		return err
	case ln != nil:
		logInherited(g.log, socketHTTP, from, "http-addr", g.cfg.HTTPAddr, ln)
	default:
		if ln, err = net.Listen("tcp", g.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("cannot listen on %s (another gateway running? set --http-addr): %w", g.cfg.HTTPAddr, err)
		}
	}
	g.httpRaw = ln
	g.httpLn = newLimitListener(ln, httpMaxConns, g.metrics.NewCounter("locky_http_connections_refused_total"))
	g.onStop("http listener", func() error {
		if g.httpDone != nil {
			return nil // served: closed by the server's shutdown
		}
		return g.httpLn.Close()
	})
	return nil
}

// newBroker creates the broker and binds its listener, or gives it the
// socket systemd passed as "mqtt"; Run starts it. The stop here closes a
// broker that Run did not start.
func (g *Gateway) newBroker() error {
	cfg := g.cfg
	var users []broker.User
	if cfg.MQTTUsers != "" {
		var err error
		if users, err = broker.ReadUsers(cfg.MQTTUsers); err != nil {
			return fmt.Errorf("--mqtt-users: %w", err)
		}
	}
	ln, from, err := inheritedListener(socketMQTT)
	switch {
	case err != nil:
		return err
	case ln != nil:
		logInherited(g.log, socketMQTT, from, "mqtt-addr", cfg.MQTTAddr, ln)
	default:
		// Bound here rather than by the broker, so that HandOver has it.
		if ln, err = net.Listen("tcp", cfg.MQTTAddr); err != nil {
			return fmt.Errorf("broker: cannot listen on %s (is another broker or gateway running? set --mqtt-addr): %w", cfg.MQTTAddr, err)
		}
	}
	g.mqttLn = ln
	b, err := broker.New(broker.Config{Addr: cfg.MQTTAddr, Listener: ln, AllowAnonymous: cfg.Dev, Users: broker.WithMaxClients(users, cfg.MQTTMaxPerUser), Metrics: g.metrics, Logger: g.log,
		MaxClients: cfg.MQTTMaxClients, MaxPerAddr: cfg.MQTTMaxPerAddr, ConnectTimeout: cfg.MQTTConnectTimeout, MaxRetained: cfg.MQTTMaxRetained})
	if err != nil {
		return err
	}
	g.broker = b
	g.onStop("mqtt listener", g.broker.Close)
	switch {
	case cfg.Dev:
		g.log.Warn("dev mode: the local broker accepts anonymous clients on every topic; do not use in production", "mqtt_addr", b.Addr())
	case len(users) == 0:
		g.log.Warn("no --mqtt-users: the local broker refuses every client; only the gateway's own handlers use it", "mqtt_addr", b.Addr())
	}
	return nil
}

// newHandlers creates the handlers and the simulated doors; nothing of them
// runs before Run.
func (g *Gateway) newHandlers() error {
	cfg := g.cfg
	var err error
	g.controller, err = controller.New(controller.Config{
		Store: g.store, Broker: g.broker, Metrics: g.metrics, Logger: g.log,
		Grace: cfg.Grace, DoorTimeout: cfg.DoorTimeout, LeftOpenAfter: cfg.LeftOpenAfter,
		LockoutThreshold: cfg.LockoutThreshold, LockoutWindow: cfg.LockoutWindow,
		LockoutBase: cfg.LockoutBase, LockoutMax: cfg.LockoutMax, LockoutResetAfter: cfg.LockoutResetAfter,
		StopWait: cfg.StopWait,
	})
	if err != nil {
		return err
	}
	g.downstream, err = storehandler.New(storehandler.Config{Store: g.store, Broker: g.broker, Grace: cfg.Grace, Metrics: g.metrics, Logger: g.log})
	if err != nil {
		return err
	}
	if cfg.SimDoors > 0 {
		if g.sim, err = simdoors.New(simdoors.Config{Doors: cfg.SimDoors, AutoClose: cfg.SimAutoClose}); err != nil {
			return fmt.Errorf("--sim-doors: %w", err)
		}
		created, err := g.store.EnsureDoors(cfg.SimDoors, cfg.SimDoorSize)
		if err != nil {
			return fmt.Errorf("cannot create the simulated doors (--sim-doors): %w", err)
		}
		if created {
			g.log.Info("empty store: created the simulated doors", "doors", cfg.SimDoors, "size", cfg.SimDoorSize)
		}
		if g.doors, err = door.New(door.Config{Driver: g.sim, Broker: g.broker, Logger: g.log}); err != nil {
			return err
		}
	}
	if cfg.DoorMap != "" {
		if err := g.newBoards(); err != nil {
			return err
		}
	}
	g.screen, err = screen.New(g.broker)
	return err
}

// newBoards builds the lock boards of the door map and their door handler;
// Run opens their serial lines. A door of the store that the map does not
// name can never open: it is logged at every start.
func (g *Gateway) newBoards() error {
	m, err := ReadDoorMap(g.cfg.DoorMap)
	if err != nil {
		return fmt.Errorf("--door-map: %w", err)
	}
	// A lock whose sensor does not change after the unlock is reported
	// jammed before the controller's own timeout, so that one jam is one
	// door_fault, with the reason. An unlock that waited for its bus past
	// half the door timeout is dropped: sent later, the door would open
	// after the screen said it did not (and count as forced open).
	m.Kerong.JamTimeout = g.cfg.DoorTimeout * 3 / 5
	m.Kerong.OpenWait = g.cfg.DoorTimeout / 2
	for i := range m.Modbus {
		m.Modbus[i].JamTimeout = g.cfg.DoorTimeout * 3 / 5
		m.Modbus[i].OpenWait = g.cfg.DoorTimeout / 2
	}
	if g.boards, err = m.newBanks(g.metrics, g.log); err != nil {
		return fmt.Errorf("--door-map: %w", err)
	}
	if g.doors, err = door.New(door.Config{Driver: g.boards, Broker: g.broker, Logger: g.log}); err != nil {
		return err
	}
	doors, err := g.store.Doors()
	if err != nil {
		return fmt.Errorf("cannot read the doors to check them against --door-map: %w", err)
	}
	for _, d := range doors {
		if !m.Maps(d.ID) {
			g.log.Warn("a door of the locker is not in the door map: it cannot open until the map names it", "door", d.ID, "door_map", g.cfg.DoorMap)
		}
	}
	return nil
}

// newBridge sets up the cloud bridge; it connects in Run.
func (g *Gateway) newBridge() error {
	cfg := g.cfg
	if cfg.CloudURL == "" {
		return nil
	}
	up, err := ParseMappings(cfg.CloudUp)
	if err != nil {
		return fmt.Errorf("--cloud-up: %w", err)
	}
	down, err := ParseMappings(cfg.CloudDown)
	if err != nil {
		return fmt.Errorf("--cloud-down: %w", err)
	}
	g.bridge, err = bridge.New(bridge.Config{
		LockerID: cfg.LockerID, URL: cfg.CloudURL,
		Username: cfg.CloudUsername, Password: cfg.CloudPassword,
		CAFile: cfg.CloudCAFile, CertFile: cfg.CloudCertFile, KeyFile: cfg.CloudKeyFile,
		SessionExpiry: cfg.CloudSessionExpiry, Up: up, Down: down, RetryMax: cfg.CloudRetryMax,
		Outbox: g.store, Local: g.broker,
		Version: Version, Logger: g.log, Metrics: g.metrics,
	})
	if err != nil {
		return fmt.Errorf("cannot set up the cloud bridge (--cloud-url and its credentials): %w", err)
	}
	return nil
}

// newPush sets up the metrics push; it pushes in Run.
func (g *Gateway) newPush() error {
	if g.cfg.MetricsPushURL == "" {
		return nil
	}
	var err error
	g.push, err = metricspush.New(metricspush.Config{URL: g.cfg.MetricsPushURL, LockerID: g.cfg.LockerID,
		Interval: g.cfg.MetricsPushInterval, Metrics: g.metrics, Logger: g.log, Write: g.writeMetrics})
	if err != nil {
		return fmt.Errorf("cannot set up the metrics push (--metrics-push-url): %w", err)
	}
	return nil
}

// serveWeb subscribes the web pages, starts their refresh and serves them
// with the rest of HTTP. The pages stop first, so that the server's shutdown
// does not wait on their event streams.
func (g *Gateway) serveWeb() error {
	cfg := g.cfg
	webCfg := web.Config{
		Store: webStore{g.store}, Broker: g.broker, Submit: g.screen.Submit, Clients: g.broker.Clients,
		LockerID: cfg.LockerID, Version: Version, Started: g.started, Dev: cfg.Dev,
		SubmitTimeout: cfg.DoorTimeout + 2*time.Second, Logger: g.log,
	}
	if g.sim != nil {
		webCfg.CloseDoor = g.sim.Close
	}
	if g.bridge != nil {
		webCfg.BridgeUp = g.bridge.LinkUp
	}
	w, err := web.New(webCfg)
	if err != nil {
		return err
	}
	if err := w.Start(context.Background()); err != nil {
		return err
	}
	g.web = w
	g.http = &http.Server{Handler: g.routes(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: httpIdleTimeout,
		ErrorLog: slog.NewLogLogger(g.log.With("component", "http").Handler(), slog.LevelWarn)}
	g.httpDone = make(chan struct{})
	go func() {
		defer close(g.httpDone)
		if err := g.http.Serve(g.httpLn); !errors.Is(err, http.ErrServerClosed) {
			g.fail(fmt.Errorf("HTTP server stopped: %w", err))
		}
	}()
	g.onStop("http", func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := g.http.Shutdown(sctx)
		if err != nil {
			// A client still sending its request: cut it rather than wait
			// for its read deadline.
			err = errors.Join(fmt.Errorf("HTTP requests still open after 2 s were cut: %w", err), g.http.Close())
		}
		<-g.httpDone
		return err
	})
	g.onStop("web pages (their event streams end)", g.web.Close)
	return nil
}

// publishLocal publishes committed outbox messages on the local broker, for
// local listeners. Nothing depends on it: the bridge reads the outbox itself.
func (g *Gateway) publishLocal(msgs []store.Message) {
	if g.broker == nil {
		return
	}
	for _, m := range msgs {
		if err := g.broker.Publish(m.Topic, m.Payload, false, 1); err != nil {
			g.log.Warn("cannot publish an upstream message locally (it stays in the outbox)", "topic", m.Topic, "err", err)
		}
	}
}

// MQTTAddr is the address the local broker listens on.
func (g *Gateway) MQTTAddr() string { return g.broker.Addr() }

// HTTPAddr is the address the HTTP server listens on.
func (g *Gateway) HTTPAddr() string { return g.httpLn.Addr().String() }

// Store returns the gateway's store (for tests and benchmarks).
func (g *Gateway) Store() *store.Store { return g.store }

// Ready reports whether the gateway serves: broker listening, store open,
// handlers subscribed.
func (g *Gateway) Ready() bool { return g.ready.Load() }

// WaitReady returns once the gateway is ready, or with ctx's error.
func (g *Gateway) WaitReady(ctx context.Context) error {
	select {
	case <-g.readyCh:
		return nil
	case <-g.stopped:
		return errors.New("gateway stopped before it was ready")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run starts the rest of the start list and serves until ctx ends or a part
// stops by itself, then stops gracefully, every step in reverse start order,
// each named and timed in the log: no new door command, the doors commanded
// awaited until they report open (their cycles persisted) or time out,
// outbox flushed, everything closed. If a step fails to start, the steps
// started so far are stopped and Run returns its error. Either way, when Run
// returns nothing of the gateway runs or holds the data dir. Run may be called
// once, and not after Close.
func (g *Gateway) Run(ctx context.Context) error {
	g.life.Lock()
	if g.state != opened {
		g.life.Unlock()
		return errors.New("gateway: Run may be called once, after New and before Close")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.state, g.cancel = running, cancel
	g.life.Unlock()
	defer close(g.stopped)

	if err := g.startAll(g.runSteps()); err != nil {
		return err
	}

	g.ready.Store(true)
	close(g.readyCh)
	if err := sdNotify("READY=1"); err != nil {
		g.log.Warn("cannot tell systemd the gateway is ready", "err", err)
	}
	g.log.Info("locker ready", "locker_id", g.cfg.LockerID, "mqtt", g.MQTTAddr(), "http", "http://"+g.HTTPAddr(),
		"sim_doors", g.cfg.SimDoors, "data_dir", g.cfg.DataDir, "startup", time.Since(g.started).Round(time.Microsecond))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-g.failed:
	}
	g.ready.Store(false)
	g.log.Info("stopping")
	if err := sdNotify("STOPPING=1"); err != nil {
		g.log.Warn("cannot tell systemd the gateway is stopping", "err", err)
	}
	g.closeErr = g.stopAll(slog.LevelInfo)
	g.logs.Flush()
	return runErr
}

// runSteps is the rest of the start list, which Run starts: one list, so
// that the order of the start, and of the graceful stop (its reverse), is
// read in one place; hence its length.
func (g *Gateway) runSteps() []step {
	// The rest of the start list. The handlers and the door driver subscribe
	// before the broker takes clients, so that no message is missed. Its
	// reverse is the graceful stop: first no new door command, and the doors
	// already commanded report open (their cycles persisted) or time out,
	// while the broker, the door driver and the pages still carry what they
	// say; then the bridge (outbox flushed), the pages, the broker (no new
	// code, no new message), the door driver (commands not yet sent to a lock
	// dropped), the handlers (open door cycles stay persisted), the store last.
	return []step{
		{"controller", g.startController},
		g.startPart("store handler", g.downstream),
		g.startPart("screen handler", g.screen),
		{"door driver", func() error {
			if g.doors == nil {
				return nil
			}
			if g.boards != nil {
				if err := g.boards.Start(context.Background()); err != nil {
					return fmt.Errorf("cannot start the lock boards of --door-map: %w", err)
				}
			}
			if err := g.doors.Start(context.Background()); err != nil {
				return errors.Join(fmt.Errorf("cannot start the door handler: %w", err), g.stopDrivers())
			}
			// The drivers first: a command still queued for a lock is dropped
			// rather than sent, since its door's state can no longer be
			// published; then the handler's own queue.
			g.onStop("door driver", func() error { return errors.Join(g.stopDrivers(), g.doors.Close()) })
			return nil
		}},
		{"broker", func() error {
			if err := g.broker.Start(); err != nil {
				return fmt.Errorf("cannot start the broker: %w", err)
			}
			g.onStop("broker", g.broker.Close)
			return nil
		}},
		{"web pages and http", g.serveWeb},
		{"metrics push", func() error {
			if g.push != nil {
				g.goStep("metrics push", func(ctx context.Context) error {
					if err := g.push.Run(ctx); err != nil {
						g.log.Error("the metrics push stopped", "err", err)
					}
					return nil
				}, g.push.Close)
			}
			return nil
		}},
		{"prune", func() error { g.goStep("prune", endless(g.pruneLoop), nil); return nil }},
		{"systemd watchdog", func() error { g.goStep("systemd watchdog", endless(g.watchdogLoop), nil); return nil }},
		{"cloud bridge", func() error {
			if g.bridge != nil {
				g.goStep("cloud bridge", func(ctx context.Context) error {
					if err := g.bridge.Run(ctx); err != nil {
						g.log.Error("the cloud bridge stopped; the locker works on, its outbox grows until restart", "err", err)
					}
					return nil
				}, g.bridge.Close)
			}
			return nil
		}},
		{"door commands", func() error {
			g.onStop("door commands (none new; the doors commanded report open or time out)", g.controller.Quiesce)
			return nil
		}},
	}
}

// stopDrivers stops the door drivers: the simulator or the lock boards.
func (g *Gateway) stopDrivers() error {
	if g.sim != nil {
		g.sim.Stop()
	}
	if g.boards != nil {
		return g.boards.Close()
	}
	return nil
}

// startController starts the controller, which restores the door cycles
// and the lockout of the last run: a database it cannot read them from is
// named with the option that points at it.
func (g *Gateway) startController() error {
	if err := g.controller.Start(context.Background()); err != nil {
		if re := (*controller.RestoreError)(nil); errors.As(err, &re) {
			return fmt.Errorf("cannot restore %s: the database in --data-dir %s is damaged; restore it from a backup: %w", re.What, g.cfg.DataDir, re.Err)
		}
		return fmt.Errorf("cannot start the controller: %w", err)
	}
	g.onStop("controller (open door cycles stay persisted)", g.controller.Close)
	return nil
}

func (g *Gateway) pruneLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := g.store.Prune(time.Now())
		if err != nil {
			g.log.Error("pruning old reservations failed; the database keeps growing", "err", err)
		} else if n > 0 {
			g.log.Info("pruned old reservations", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops the gateway and releases the data dir. Before Run it stops
// what New started, in reverse order; during Run it ends Run as the end of
// its context would and waits for Run's graceful stop; after Run it only
// waits. It returns the errors of the steps that failed to stop (nil after a
// failed start: Run returned those). It is safe to call more than once and
// from any goroutine.
func (g *Gateway) Close() error {
	g.life.Lock()
	switch g.state {
	case opened:
		g.state = closed
		g.life.Unlock()
		g.closeErr = g.stopAll(slog.LevelDebug)
		g.logs.Flush()
		close(g.stopped)
	case running:
		cancel := g.cancel
		g.life.Unlock()
		cancel()
	default:
		g.life.Unlock()
	}
	<-g.stopped
	return g.closeErr
}
