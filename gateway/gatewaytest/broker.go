package gatewaytest

import (
	"testing"

	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/gateway/testenv"
)

// StartBroker starts the locker's real broker alone, on a free loopback
// port and open to anonymous test clients, for the tests of one handler; it
// is closed when the test ends.
func StartBroker(t testing.TB) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", AllowAnonymous: true, Logger: testenv.QuietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	return b
}
