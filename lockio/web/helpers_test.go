package web_test

import (
	"log/slog"
	"testing"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
)

func testLogger(t testing.TB) *slog.Logger { return testenv.QuietLogger(t) }

type testGateway = gatewaytest.Gateway

func testConfig(t testing.TB) gateway.Config { return gatewaytest.Config(t) }

func startGateway(t testing.TB, cfg gateway.Config) *testGateway { return gatewaytest.Start(t, cfg) }
