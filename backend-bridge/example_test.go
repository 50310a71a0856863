package bridge_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	mqtt "github.com/mochi-mqtt/server/v2"

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
	local := mqtt.New(&mqtt.Options{InlineClient: true})

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
