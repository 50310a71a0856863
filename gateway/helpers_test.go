package gateway_test

import (
	"testing"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
)

const waitLimit = gatewaytest.WaitLimit

type testGateway = gatewaytest.Gateway

func testConfig(t testing.TB) gateway.Config { return gatewaytest.Config(t) }

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
