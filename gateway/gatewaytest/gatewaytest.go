// Package gatewaytest runs a real gateway inside a test: a simulated locker on
// free loopback ports with its own data dir, stopped as SIGTERM would stop it
// when the test ends, and its database checked once it stopped. Tests of the
// binary itself (signals, crashes, upgrades, socket activation) build it
// with Build and run it as a child process with StartProcess or Launch.
//
// Its place in the layering: test support on top of the assembly (it imports
// gateway); only tests import it, from any layer, to run the whole locker.
package gatewaytest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/store"
)

// WaitLimit bounds the waits of tests on a gateway, so that a broken feature
// fails the test instead of hanging it. It is not a timing assertion.
const WaitLimit = 15 * time.Second

// Config is the default configuration on free loopback ports and a fresh data dir.
func Config(t testing.TB) gateway.Config {
	cfg := gateway.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	return cfg
}

// Gateway is a gateway running in the test.
type Gateway struct {
	*gateway.Gateway
	Cfg     gateway.Config
	cancel  context.CancelFunc
	done    chan error
	stopped bool // Stop has run
}

// Start runs a gateway until the test ends and returns once it is ready.
func Start(t testing.TB, cfg gateway.Config) *Gateway {
	t.Helper()
	g, err := gateway.New(cfg, testenv.QuietLogger(t))
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg := &Gateway{Gateway: g, Cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx) }()
	rctx, rcancel := context.WithTimeout(context.Background(), WaitLimit)
	defer rcancel()
	if err := g.WaitReady(rctx); err != nil {
		t.Fatalf("gateway not ready: %v", err)
	}
	t.Cleanup(func() { tg.Stop(t) })
	return tg
}

// Stop stops the gateway as SIGTERM would and waits for it; it fails the
// test if the gateway stops with an error, or if its database then fails
// store.CheckFile. Calling it again does nothing, so a test may edit the
// database of a gateway it stopped.
func (g *Gateway) Stop(t testing.TB) {
	t.Helper()
	if g.stopped {
		return
	}
	g.stopped = true
	g.cancel()
	select {
	case err := <-g.done:
		if err != nil {
			t.Errorf("gateway stopped with %v", err)
		}
	case <-time.After(WaitLimit):
		t.Errorf("gateway did not stop within %s", WaitLimit)
		return // it still holds its database
	}
	if err := store.CheckFile(filepath.Join(g.Cfg.DataDir, "locky.db")); err != nil {
		t.Errorf("database check of the stopped gateway: %v", err)
	}
}
