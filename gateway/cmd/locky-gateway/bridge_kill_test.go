package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestSIGKILLWithAFullOutboxWhileOffline kills the gateway while its link to
// the cloud is cut and its outbox holds the events of several deliveries,
// starts it again (still offline), restores the link, and checks that the
// back-end receives every one of those events.
func TestSIGKILLWithAFullOutboxWhileOffline(t *testing.T) {
	bin := buildGateway(t)
	cloud := testenv.StartMosquitto(t)
	proxy := testenv.NewProxy(t, cloud.Addr)

	// The back-end, subscribed directly to the cloud broker.
	var mu sync.Mutex
	stored := map[string]bool{}
	got := make(chan struct{}, 1)
	conn, err := net.Dial("tcp", cloud.Addr)
	if err != nil {
		t.Fatal(err)
	}
	backend := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			var e contract.Event
			if json.Unmarshal(pr.Packet.Payload, &e) == nil && e.Type == contract.EventStored {
				mu.Lock()
				stored[e.Reservation] = true
				mu.Unlock()
				select {
				case got <- struct{}{}:
				default:
				}
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := backend.Connect(ctx, &paho.Connect{ClientID: "backend", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Disconnect(&paho.Disconnect{}) })
	if _, err := backend.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "lockers/locker-k/up/events", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	dataDir := t.TempDir()
	args := []string{"--locker-id", "locker-k", "--cloud-url", proxy.URL()}
	p := startProcess(t, bin, dataDir, args...)
	proxy.Cut()
	d, err := connectDriver(p)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	for i := 0; i < n; i++ { // deposit n parcels while offline
		s := ""
		for _, want := range []string{contract.StatusArriving, contract.StatusStored} {
			if s, err = d.step(i, s, 0); err != nil || s != want {
				t.Fatalf("R%d: %q %v; want %s", i, s, err, want)
			}
		}
	}
	p.Kill() // SIGKILL with n events in the outbox, none sent
	mu.Lock()
	early := len(stored)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d events reached the cloud through a cut link", early)
	}

	startProcess(t, bin, dataDir, args...) // still offline
	proxy.Restore()
	deadline := time.After(30 * time.Second)
	for {
		mu.Lock()
		k := len(stored)
		mu.Unlock()
		if k == n {
			break
		}
		select {
		case <-got:
		case <-deadline:
			t.Fatalf("the cloud got %d of %d stored events after the kill and the restore", k, n)
		}
	}
	for i := 0; i < n; i++ {
		if !stored[fmt.Sprintf("R%d", i)] {
			t.Errorf("R%d's stored event never reached the cloud", i)
		}
	}
}
