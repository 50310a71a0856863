package gateway_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
)

const waitLimit = gatewaytest.WaitLimit

type testGateway = gatewaytest.Gateway

func testConfig(t testing.TB) gateway.Config { return gatewaytest.Config(t) }

// runGateway makes a gateway that logs to log and runs it until the test
// stops it (Close), for a test that watches its log or its stop; it returns
// once the gateway is ready, with the channel Run's result comes on.
func runGateway(t *testing.T, cfg gateway.Config, log *slog.Logger) (*gateway.Gateway, <-chan error) {
	t.Helper()
	g, err := gateway.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return g, done
}

func startGateway(t testing.TB, cfg gateway.Config) *testGateway { return gatewaytest.Start(t, cfg) }

var (
	connect     = gatewaytest.Connect
	reservation = gatewaytest.Reservation
)

func statusOf(t testing.TB, g *testGateway, id string) string {
	t.Helper()
	r, err := g.Store().Reservation(id)
	if err != nil {
		t.Fatalf("reservation %s: %v", id, err)
	}
	return r.Status
}
