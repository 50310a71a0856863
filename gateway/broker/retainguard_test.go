package broker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRetainedPublishesWhileClientsSubscribe publishes retained door states
// while network clients subscribe to locky/# and receive the retained ones:
// the meeting that races inside mochi v2.7.9 without the guard (the race
// detector, on in CI, reports it). Every subscriber must get every door's
// retained state.
func TestRetainedPublishesWhileClientsSubscribe(t *testing.T) {
	b, err := New(Config{Addr: "127.0.0.1:0", AllowAnonymous: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	const doors = 12
	for d := 1; d <= doors; d++ { // every door has a retained state before the race
		if err := b.Publish(fmt.Sprintf("locky/doors/%d/state", d), []byte(`{"state":"closed"}`), true, 1); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a door board flapping
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			state := []string{`{"state":"open"}`, `{"state":"closed"}`}[i%2]
			if err := b.Publish(fmt.Sprintf("locky/doors/%d/state", i%doors+1), []byte(state), true, 1); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for n := 0; n < 20; n++ {
		got := make(chan string, 4*doors)
		c, err := dial(t, b.Addr(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
			if pr.Packet.Retain {
				got <- pr.Packet.Topic
			}
			return true, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "locky/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for len(seen) < doors {
			select {
			case topic := <-got:
				seen[topic] = true
			case <-ctx.Done():
				t.Fatalf("subscriber %d got the retained state of %d doors; want %d", n, len(seen), doors)
			}
		}
		cancel()
	}
	close(stop)
	wg.Wait()
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
