package testenv

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// StartMochi starts an embedded mochi broker with the inline client on, no
// listener and an allow-all hook (mochi's own auth package needs a YAML module
// this repository does not carry). It is closed by t.Cleanup.
func StartMochi(t testing.TB) *mqtt.Server {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: mqtt.NewDefaultServerCapabilities(), Logger: Logger(t)})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		t.Fatalf("mochi hook: %s", err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatalf("mochi serve: %s", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// allowAll lets every client connect, publish and subscribe.
type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow-all" }

func (h *allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
