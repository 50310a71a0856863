// Package gateway assembles the locker: the embedded broker, the store, the
// handlers, the door driver, the bridge and the HTTP server, and runs them
// from start to graceful stop.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/gateway/metricspush"
	"github.com/locky-edge/locky/gateway/store"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/controller"
	"github.com/locky-edge/locky/handlers/door"
	"github.com/locky-edge/locky/handlers/screen"
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
	metrics *metrics.Set
	started time.Time

	broker     *broker.Broker
	store      *store.Store
	controller *controller.Controller
	downstream *storehandler.Handler
	doors      *door.Handler
	sim        *simdoors.Bank
	screen     *screen.Handler
	web        *web.Web
	bridge     *bridge.Bridge      // nil without --cloud-url
	push       *metricspush.Pusher // nil without --metrics-push-url
	httpLn     net.Listener
	http       *http.Server

	ready     atomic.Bool
	readyCh   chan struct{}
	closeOnce sync.Once
	closeErr  error
	stopped   chan struct{}
}

// New opens everything the gateway needs and binds its listeners, so that a
// busy port or a locked database is reported before anything runs.
func New(cfg Config, log *slog.Logger) (g *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	g = &Gateway{cfg: cfg, log: log, metrics: metrics.NewSet(), started: time.Now(),
		stopped: make(chan struct{}), readyCh: make(chan struct{})}
	opened := g // a failed New returns nil: close what it opened
	defer func() {
		if err != nil {
			opened.closeAll()
		}
	}()
	if err := prepareDataDir(cfg.DataDir, log); err != nil {
		return nil, err
	}
	keys, err := loadCodeKeys(cfg, log)
	if err != nil {
		return nil, err
	}
	outboxDropped := map[string]*metrics.Counter{
		"bytes": g.metrics.NewCounter(`locky_outbox_dropped_total{reason="bytes"}`),
		"age":   g.metrics.NewCounter(`locky_outbox_dropped_total{reason="age"}`),
	}
	g.store, err = store.Open(store.Config{
		Path:                 filepath.Join(cfg.DataDir, "locky.db"),
		CodeKey:              keys.current,
		PreviousCodeKey:      keys.previous,
		PreviousCodeKeyUntil: keys.previousUntil,
		OutboxMaxBytes:       cfg.OutboxMaxBytes,
		OutboxMaxAge:         cfg.OutboxMaxAge,
		Retention:            cfg.Retention,
		OnDrop:               func(reason string, n int) { outboxDropped[reason].Add(n) },
		OnCommit:             g.publishLocal,
		Metrics:              g.metrics,
		Logger:               log,
	})
	if err != nil {
		return nil, err
	}
	var users []broker.User
	if cfg.MQTTUsers != "" {
		if users, err = broker.ReadUsers(cfg.MQTTUsers); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Dev:
		log.Warn("dev mode: the local broker accepts anonymous clients on every topic; do not use in production", "mqtt_addr", cfg.MQTTAddr)
	case len(users) == 0:
		log.Warn("no --mqtt-users: the local broker refuses every client; only the gateway's own handlers use it", "mqtt_addr", cfg.MQTTAddr)
	}
	g.broker, err = broker.New(broker.Config{Addr: cfg.MQTTAddr, AllowAnonymous: cfg.Dev, Users: users, Metrics: g.metrics, Logger: log,
		MaxClients: cfg.MQTTMaxClients, MaxPerAddr: cfg.MQTTMaxPerAddr, ConnectTimeout: cfg.MQTTConnectTimeout, MaxRetained: cfg.MQTTMaxRetained})
	if err != nil {
		return nil, err
	}
	g.controller, err = controller.New(controller.Config{
		Store: g.store, Broker: g.broker, Metrics: g.metrics, Logger: log,
		Grace: cfg.Grace, DoorTimeout: cfg.DoorTimeout, LeftOpenAfter: cfg.LeftOpenAfter,
		LockoutThreshold: cfg.LockoutThreshold, LockoutWindow: cfg.LockoutWindow,
		LockoutBase: cfg.LockoutBase, LockoutMax: cfg.LockoutMax, LockoutResetAfter: cfg.LockoutResetAfter,
	})
	if err != nil {
		return nil, err
	}
	g.downstream, err = storehandler.New(storehandler.Config{Store: g.store, Grace: cfg.Grace, Metrics: g.metrics, Logger: log})
	if err != nil {
		return nil, err
	}
	if cfg.SimDoors > 0 {
		if g.sim, err = simdoors.New(simdoors.Config{Doors: cfg.SimDoors, AutoClose: cfg.SimAutoClose}); err != nil {
			return nil, err
		}
		created, err := g.store.EnsureDoors(cfg.SimDoors, cfg.SimDoorSize)
		if err != nil {
			return nil, fmt.Errorf("cannot create the simulated doors: %w", err)
		}
		if created {
			log.Info("empty store: created the simulated doors", "doors", cfg.SimDoors, "size", cfg.SimDoorSize)
		}
		if g.doors, err = door.New(door.Config{Driver: g.sim, Broker: g.broker, Logger: log}); err != nil {
			return nil, err
		}
	}
	if g.screen, err = screen.New(g.broker); err != nil {
		return nil, err
	}
	if cfg.CloudURL != "" {
		up, err := ParseMappings(cfg.CloudUp)
		if err != nil {
			return nil, fmt.Errorf("--cloud-up: %w", err)
		}
		down, err := ParseMappings(cfg.CloudDown)
		if err != nil {
			return nil, fmt.Errorf("--cloud-down: %w", err)
		}
		g.bridge, err = bridge.New(bridge.Config{
			LockerID: cfg.LockerID, URL: cfg.CloudURL,
			Username: cfg.CloudUsername, Password: cfg.CloudPassword,
			CAFile: cfg.CloudCAFile, CertFile: cfg.CloudCertFile, KeyFile: cfg.CloudKeyFile,
			SessionExpiry: cfg.CloudSessionExpiry, Up: up, Down: down, RetryMax: cfg.CloudRetryMax,
			Outbox: g.store, Local: downstreamLocal{g},
			Version: Version, Logger: log, Metrics: g.metrics,
		})
		if err != nil {
			return nil, fmt.Errorf("cannot set up the cloud bridge: %w", err)
		}
	}
	webCfg := web.Config{
		Store: g.store, Broker: g.broker, Submit: g.screen.Submit, Clients: g.broker.Clients,
		LockerID: cfg.LockerID, Version: Version, Started: g.started, Dev: cfg.Dev,
		SubmitTimeout: cfg.DoorTimeout + 2*time.Second, Logger: log,
	}
	if g.sim != nil {
		webCfg.CloseDoor = g.sim.Close
	}
	if g.bridge != nil {
		webCfg.BridgeUp = g.bridge.LinkUp
	}
	if g.web, err = web.New(webCfg); err != nil {
		return nil, err
	}
	g.registerMetrics()
	if cfg.MetricsPushURL != "" {
		g.push, err = metricspush.New(metricspush.Config{URL: cfg.MetricsPushURL, LockerID: cfg.LockerID,
			Interval: cfg.MetricsPushInterval, Metrics: g.metrics, Logger: log, Write: g.writeMetrics})
		if err != nil {
			return nil, fmt.Errorf("cannot set up the metrics push: %w", err)
		}
	}
	g.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s (another gateway running? set --http-addr): %w", cfg.HTTPAddr, err)
	}
	g.http = &http.Server{Handler: g.routes(), ReadHeaderTimeout: 5 * time.Second}
	return g, nil
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

// Run starts everything and serves until ctx ends, then stops gracefully:
// no new codes, open door cycles persisted, outbox flushed, everything closed.
func (g *Gateway) Run(ctx context.Context) error {
	defer close(g.stopped)
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- g.controller.Run(runCtx) }()

	subs := []struct {
		filter string
		fn     func(contract.Message)
	}{
		{contract.TopicScreenCode, func(m contract.Message) {
			var reply *controller.Reply
			if m.ResponseTopic != "" {
				reply = &controller.Reply{ResponseTopic: m.ResponseTopic, Correlation: m.Correlation}
			}
			g.controller.HandleCode(m.Payload, reply)
		}},
		{contract.TopicDoorStates, func(m contract.Message) {
			if d, err := contract.DoorFromTopic(m.Topic, "state"); err == nil {
				g.controller.HandleDoorState(d, m.Payload)
			}
		}},
		{contract.TopicDownAll, g.handleDown},
	}
	for _, s := range subs {
		if err := g.broker.Subscribe(s.filter, s.fn); err != nil {
			return fmt.Errorf("cannot subscribe to %s: %w", s.filter, err)
		}
	}
	if err := g.screen.Start(); err != nil {
		return fmt.Errorf("cannot start the screen handler: %w", err)
	}
	if g.doors != nil {
		if err := g.doors.Start(runCtx); err != nil {
			return fmt.Errorf("cannot start the door handler: %w", err)
		}
	}
	if err := g.broker.Start(); err != nil {
		return fmt.Errorf("cannot start the broker: %w", err)
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- g.http.Serve(g.httpLn) }()
	go g.pruneLoop(runCtx)
	if g.bridge != nil {
		go func() {
			if err := g.bridge.Run(runCtx); err != nil {
				g.log.Error("the cloud bridge stopped; the locker works on, its outbox grows until restart", "err", err)
			}
		}()
	}
	go g.watchdogLoop(runCtx)
	if g.push != nil {
		go func() {
			if err := g.push.Run(runCtx); err != nil {
				g.log.Error("the metrics push stopped", "err", err)
			}
		}()
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
	case err := <-ctrlDone:
		runErr = fmt.Errorf("controller stopped: %w", err)
	case err := <-httpDone:
		runErr = fmt.Errorf("HTTP server stopped: %w", err)
	}
	g.ready.Store(false)
	g.log.Info("stopping")
	if err := sdNotify("STOPPING=1"); err != nil {
		g.log.Warn("cannot tell systemd the gateway is stopping", "err", err)
	}
	step := func(name string, fn func() error) {
		t := time.Now()
		if err := fn(); err != nil {
			g.log.Error("stop step failed", "step", name, "err", err)
		}
		g.log.Info("stopped", "step", name, "took", time.Since(t).Round(time.Microsecond))
	}
	step("controller (open door cycles stay persisted)", g.controller.Close)
	if g.bridge != nil {
		step("cloud bridge", g.bridge.Close)
	}
	cancel()
	if g.doors != nil {
		step("door driver", func() error { g.doors.Wait(); g.sim.Stop(); return nil })
	}
	if g.push != nil {
		step("metrics push", g.push.Close)
	}
	step("web pages (their event streams end)", g.web.Close)
	step("http", func() error {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		return g.http.Shutdown(sctx)
	})
	step("broker", g.broker.Close)
	step("store", g.store.Close)
	return runErr
}

// downstreamLocal is the bridge's way into the locker: messages for
// locky/down/* are applied directly, so that the bridge acknowledges them to
// the cloud only once committed (a failure is redelivered, not lost).
type downstreamLocal struct{ g *Gateway }

func (d downstreamLocal) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if strings.HasPrefix(topic, contract.TopicDownPrefix) {
		return d.g.deliverDown(contract.Message{Topic: topic, Payload: payload})
	}
	return d.g.broker.Publish(topic, payload, retain, qos)
}

// handleDown routes a message of locky/down/* published on the local broker.
func (g *Gateway) handleDown(m contract.Message) {
	if err := g.deliverDown(m); err != nil {
		g.log.Error("a downstream message was not applied and is not acked; the back-end should resend it", "topic", m.Topic, "err", err)
	}
}

// deliverDown applies one downstream message: support commands go to the
// controller, the rest to the store handler. It returns after the message and
// its ack are committed, or with the error that kept them from being so. The
// bridge calls it directly and acknowledges to the cloud only on success.
func (g *Gateway) deliverDown(m contract.Message) error {
	if m.Topic == contract.TopicDownCommands {
		return g.controller.HandleCommand(m.Payload)
	}
	return g.downstream.Handle(m)
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

// Close releases what New opened when Run was never called. After Run it
// does nothing.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		select {
		case <-g.stopped:
		default:
			g.closeAll()
		}
	})
	return g.closeErr
}

func (g *Gateway) closeAll() {
	if g.web != nil {
		_ = g.web.Close()
	}
	if g.httpLn != nil {
		_ = g.httpLn.Close()
	}
	if g.broker != nil {
		_ = g.broker.Close()
	}
	if g.store != nil {
		g.closeErr = g.store.Close()
	}
}
