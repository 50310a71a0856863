package web_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway"
)

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testGateway struct {
	*gateway.Gateway
	cancel context.CancelFunc
	done   chan error
}

// testConfig is a simulated locker on free loopback ports with its own data dir.
func testConfig(t testing.TB) gateway.Config {
	cfg := gateway.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	return cfg
}

// startGateway runs a gateway until the test ends.
func startGateway(t testing.TB, cfg gateway.Config) *testGateway {
	t.Helper()
	g, err := gateway.New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{Gateway: g, cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx) }()
	rctx, rcancel := context.WithTimeout(context.Background(), waitLimit)
	defer rcancel()
	if err := g.WaitReady(rctx); err != nil {
		t.Fatalf("gateway not ready: %v", err)
	}
	t.Cleanup(func() {
		tg.cancel()
		select {
		case err := <-tg.done:
			if err != nil {
				t.Errorf("gateway stopped with %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("gateway did not stop")
		}
	})
	return tg
}
