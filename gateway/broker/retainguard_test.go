package broker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
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

// TestRetainedWillsWhileClientsSubscribe is the same meeting with the door
// states set by retained Wills of door boards that drop their connection:
// mochi retains a Will without OnPublish, so the guard takes its lock in
// OnWill (read from mochi's sendLWT; this test does not reproduce the race
// reliably without it). Every Will's state must be delivered and retained,
// and the guard's lock must be released after each Will, or the later
// subscriber would hang.
func TestRetainedWillsWhileClientsSubscribe(t *testing.T) {
	b, err := New(Config{Addr: "127.0.0.1:0", AllowAnonymous: true, Logger: quietLogger(),
		ConnectBurst: 1000, MaxPerAddr: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	const boards = 48
	faults := func(c *paho.Client) chan string {
		got := make(chan string, 2*boards)
		c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
			if string(pr.Packet.Payload) == `{"state":"fault"}` {
				got <- pr.Packet.Topic
			}
			return true, nil
		})
		return got
	}
	subscribe := func(c *paho.Client) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "locky/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	await := func(got chan string, who string) {
		seen := map[string]bool{}
		timeout := time.After(10 * time.Second)
		for len(seen) < boards {
			select {
			case topic := <-got:
				seen[topic] = true
			case <-timeout:
				t.Fatalf("%s: the fault state of %d boards; want %d", who, len(seen), boards)
			}
		}
	}
	watcher, err := dial(t, b.Addr(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	live := faults(watcher)
	subscribe(watcher)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // boards losing power, each leaving a retained fault state
		defer wg.Done()
		for d := 1; d <= boards; d++ {
			conn, err := net.Dial("tcp", b.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			c := paho.NewClient(paho.ClientConfig{Conn: conn})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err = c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("board-%d", d), CleanStart: true, KeepAlive: 30,
				WillMessage: &paho.WillMessage{Topic: fmt.Sprintf("locky/doors/%d/state", d), Payload: []byte(`{"state":"fault"}`), Retain: true, QoS: 1}})
			cancel()
			if err != nil {
				t.Error(err)
				return
			}
			conn.Close() // no DISCONNECT: the Will is sent
		}
	}()
	for n := 0; n < 60; n++ { // clients subscribing to locky/# meanwhile
		c, err := dial(t, b.Addr(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		subscribe(c)
	}
	wg.Wait()
	await(live, "the watcher")
	late, err := dial(t, b.Addr(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	retained := faults(late)
	subscribe(late)
	await(retained, "a later subscriber")
}
