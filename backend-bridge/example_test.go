package bridge_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/handlers/store"
)

// The gateway wires the bridge between its store (the outbox) and its
// embedded broker, runs it beside the rest and closes it first on shutdown.
func ExampleNew() {
	st, err := store.Open(store.Config{Path: filepath.Join(os.TempDir(), "locky-example.db"), CodeKey: make([]byte, 32)})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	var local localBroker // the gateway passes its broker

	b, err := bridge.New(bridge.Config{
		LockerID: "locker-0001",
		URL:      "mqtts://cloud.example:8883",
		Username: "locker-0001",
		Password: "secret",
		Outbox:   st,
		Local:    local,
		Version:  "1.0.0",
		Logger:   slog.Default(),
	})
	if err != nil {
		panic(err) // names the bad field or file
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = b.Run(ctx) }() // returns nil once stopped
	// ... serve; /readyz and the status page read b.LinkUp() ...
	cancel()
	_ = b.Close()
}

// localBroker stands for the locker's broker: Deliver publishes a message and
// answers once the handlers of its topic committed it.
type localBroker struct{}

func (localBroker) Deliver(topic string, payload []byte, qos byte) error { return nil }
