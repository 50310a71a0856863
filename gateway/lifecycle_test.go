package gateway_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/testenv"
)

// lifecycleConfig is the test configuration on fixed free ports, so that a
// test can check that a stopped gateway released them.
func lifecycleConfig(t *testing.T) gateway.Config {
	cfg := testConfig(t)
	cfg.MQTTAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	return cfg
}

// checkReleased checks that nothing of a stopped gateway holds what it
// used: no goroutine of it runs, its ports can be bound, and another gateway
// opens its data dir at once (a locked database would make New fail).
func checkReleased(t *testing.T, cfg gateway.Config, before goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, before)
	for _, addr := range []string{cfg.MQTTAddr, cfg.HTTPAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s is still held: %v", addr, err)
			continue
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
	}
	next := cfg
	next.CloudURL, next.CloudCAFile = "", ""
	g, err := gateway.New(next, testenv.QuietLogger(t))
	if err != nil {
		t.Fatalf("a second gateway cannot open the data dir: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestFailedNewStopsWhatItStarted fails New at its step that sets up the
// cloud bridge, after the store, the HTTP listener and the broker started:
// New returns the error, naming the option, and leaves nothing behind.
func TestFailedNewStopsWhatItStarted(t *testing.T) {
	cfg := lifecycleConfig(t)
	cfg.CloudURL = "mqtts://127.0.0.1:8883"
	cfg.CloudCAFile = filepath.Join(t.TempDir(), "missing-ca.pem")
	before := goleak.IgnoreCurrent()
	g, err := gateway.New(cfg, testenv.QuietLogger(t))
	if err == nil {
		g.Close()
		t.Fatal("New with a CA file that does not exist succeeded")
	}
	if g != nil {
		t.Errorf("a failed New returned a gateway")
	}
	if !strings.Contains(err.Error(), "--cloud-url") || !strings.Contains(err.Error(), "missing-ca.pem") {
		t.Errorf("error %q; want one naming --cloud-url and the CA file", err)
	}
	checkReleased(t, cfg, before)
}

// TestRunThatFailsStopsEverything makes Run fail for real at its last start
// step, after the broker, the HTTP server, the web pages, the door driver and
// the loops started: an open door cycle in the database that does not decode
// cannot be restored. Run returns that error before the gateway is ready, and
// when it has returned nothing of the gateway runs or holds its ports and
// data dir; Close after it returns at once, as often as it is called.
func TestRunThatFailsStopsEverything(t *testing.T) {
	cfg := lifecycleConfig(t)
	g, err := gateway.New(cfg, testenv.QuietLogger(t)) // creates the database
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(cfg.DataDir, "locky.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("cycles")).Put(binary.BigEndian.AppendUint32(nil, 1), []byte("{not json"))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	before := goleak.IgnoreCurrent()
	g, err = gateway.New(cfg, testenv.QuietLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = g.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Run did not stop by itself: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), "cannot restore the open door cycles: the database in --data-dir "+cfg.DataDir+" is damaged") {
		t.Fatalf("Run returned %v; want the door cycles that cannot be restored", err)
	}
	if g.Ready() {
		t.Errorf("the gateway says it is ready after a failed start")
	}
	if err := g.WaitReady(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("WaitReady after a failed start: %v; want the gateway stopped", err)
	}
	for range 2 {
		if err := g.Close(); err != nil {
			t.Errorf("Close after Run: %v", err)
		}
	}
	if err := g.Run(context.Background()); err == nil {
		t.Errorf("a second Run succeeded")
	}
	checkReleased(t, cfg, before)
}

// TestCloseEndsRun closes a running gateway from another goroutine: Run
// stops gracefully and returns nil, and everything is released.
func TestCloseEndsRun(t *testing.T) {
	cfg := lifecycleConfig(t)
	before := goleak.IgnoreCurrent()
	g, done := runGateway(t, cfg, testenv.QuietLogger(t))
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close: %v; want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after Close")
	}
	checkReleased(t, cfg, before)
}

// TestCloseBeforeRun closes a gateway that never ran: what New started is
// stopped, and Run refuses to start it again.
func TestCloseBeforeRun(t *testing.T) {
	cfg := lifecycleConfig(t)
	before := goleak.IgnoreCurrent()
	g, err := gateway.New(cfg, testenv.QuietLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if err := g.Run(context.Background()); err == nil {
		t.Fatal("Run after Close succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := g.WaitReady(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady after Close: %v; want the gateway stopped", err)
	}
	checkReleased(t, cfg, before)
}
