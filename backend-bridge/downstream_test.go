package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/storehandler"
)

// recordingStore is the locker's store that records the msg_id of each
// downstream message committed (applied or rejected, with its ack), in order.
type recordingStore struct {
	*store.Store

	mu        sync.Mutex
	committed []string
}

func (f *recordingStore) record(msgID string, msgs []store.Message, err error) ([]store.Message, error) {
	if err == nil {
		f.mu.Lock()
		f.committed = append(f.committed, msgID)
		f.mu.Unlock()
	}
	return msgs, err
}

func (f *recordingStore) commits() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.committed)
}

func (f *recordingStore) Snapshot(now time.Time, msgID string) ([]store.Message, error) {
	msgs, err := f.Store.Snapshot(now, msgID)
	return f.record(msgID, msgs, err)
}

func (f *recordingStore) UpsertDoor(now time.Time, msgID string, d contract.Door) ([]store.Message, error) {
	msgs, err := f.Store.UpsertDoor(now, msgID, d)
	return f.record(msgID, msgs, err)
}

func (f *recordingStore) UpsertReservation(now time.Time, msgID string, r contract.Reservation, grace time.Duration) ([]store.Message, error) {
	msgs, err := f.Store.UpsertReservation(now, msgID, r, grace)
	return f.record(msgID, msgs, err)
}

func (f *recordingStore) DeleteReservation(now time.Time, msgID, id string) ([]store.Message, error) {
	msgs, err := f.Store.DeleteReservation(now, msgID, id)
	return f.record(msgID, msgs, err)
}

func (f *recordingStore) Ack(now time.Time, msgID string, err error) ([]store.Message, error) {
	msgs, err := f.Store.Ack(now, msgID, err)
	return f.record(msgID, msgs, err)
}

// locker is the locker's side of the bridge as the gateway wires it: the
// store handler commits each locky/down/* message, and its ack into the
// outbox, inside Publish. While full is set, it cannot commit a sync, as a
// snapshot that finds no room on the disk, and says so.
type locker struct {
	handle func(contract.Message) error // the store handler's subscription
	full   atomic.Bool
}

func newLocker(t testing.TB, st storehandler.Store) *locker {
	t.Helper()
	l := &locker{}
	h, err := storehandler.New(storehandler.Config{Store: st, Broker: l, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return l
}

// Handle takes the store handler's subscription (to locky/down/#).
func (l *locker) Handle(_ string, fn func(contract.Message) error) error {
	l.handle = fn
	return nil
}

// Deliver hands a message to the store handler as the gateway's broker does,
// and fails a sync while the disk is "full".
func (l *locker) Deliver(topic string, payload []byte, _ byte) error {
	if !strings.HasPrefix(topic, contract.TopicDownPrefix) {
		return fmt.Errorf("no local subscriber for %s in this test", topic)
	}
	if topic == contract.TopicDownSync && l.full.Load() {
		return fmt.Errorf("cannot commit the snapshot: %w", syscall.ENOSPC)
	}
	return l.handle(contract.Message{Topic: topic, Payload: payload})
}

// TestLocalFailureKeepsLink: a cloud sync whose snapshot cannot be written
// (a full disk) is retried locally while the link stays up and the outbox
// keeps draining; the messages behind it wait, unacknowledged, and are
// redelivered after the gateway dies; once the disk has room, all of them are
// committed once each, in order, and acked to the cloud.
func TestLocalFailureKeepsLink(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	backend := newCloudClient(t, cloud.URL(), "backend", "", "", "lockers/+/up/#")
	watcher := newCloudClient(t, cloud.URL(), "watcher", "", "", "lockers/+/status")
	s := openStore(t, filepath.Join(t.TempDir(), "db"))
	fs := &recordingStore{Store: s}
	loc := newLocker(t, fs)
	loc.full.Store(true)
	start := func() (*Bridge, *metrics.Set) {
		set := metrics.NewSet()
		b := startBridge(t, Config{URL: cloud.URL(), Outbox: s, Local: loc, Metrics: set,
			LocalRetryMin: time.Millisecond, LocalRetryMax: 20 * time.Millisecond})
		waitUntil(t, "link up", b.LinkUp)
		return b, set
	}
	metric := func(set *metrics.Set, name string, want float64) {
		t.Helper()
		if got := metricValue(t, set, name); got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
	down := []struct{ entity, payload string }{
		{"sync", `{"msg_id":"m-1"}`},
		{"doors", `{"msg_id":"m-2","op":"upsert","door":{"id":7}}`},
		{"reservations", `{"msg_id":"m-3","op":"upsert","reservation":{"id":"R1","version":1,"door":7,"status":"arriving",` +
			`"deposit_code":"123456","pickup_code":"654321","courier_code":"777000"}}`},
		{"reservations", `{"msg_id":"m-4","op":"delete","reservation":{"id":"R1"}}`},
	}

	// The disk is full: the sync is retried, the three behind it wait.
	b1, set1 := start()
	watcher.expectPayload(t, "lockers/L1/status", `"downstream":"ok"`)
	for _, m := range down {
		backend.publish(t, "lockers/L1/down/"+m.entity, m.payload)
	}
	waitUntil(t, "the sync retried, the rest waiting", func() bool {
		return metricValue(t, set1, metricRetries) >= 2 && metricValue(t, set1, metricWaiting) == 4
	})
	p := watcher.expectPayload(t, "lockers/L1/status", `"downstream":"retrying"`)
	for _, want := range []string{`"state":"online"`, `"downstream_topic":"locky/down/sync"`, syscall.ENOSPC.Error()} {
		if !bytesContains(p.Payload, want) {
			t.Errorf("status %s; want %s in it", p.Payload, want)
		}
	}
	metric(set1, metricRetrying, 1)

	// Upstream keeps flowing meanwhile.
	appendEvents(t, s, 20)
	backend.expectEvents(t, eventTopic("L1"), 1, 20)
	metric(set1, metricConnected, 1)
	metric(set1, metricConnectFailed, 0)
	metric(set1, metricDelivered, 0)
	if !b1.LinkUp() {
		t.Error("the link went down during the local retries")
	}
	if got := fs.commits(); len(got) != 0 {
		t.Errorf("committed %v while the sync before them was failing; want nothing", got)
	}

	// The gateway dies: nothing was acknowledged, so the cloud sends all four
	// again to the next one, which retries the sync until the disk has room.
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	watcher.expectPayload(t, "lockers/L1/status", `"state":"offline"`)
	b2, set2 := start()
	waitUntil(t, "all four redelivered, the sync retried", func() bool {
		return metricValue(t, set2, metricRetries) >= 1 && metricValue(t, set2, metricWaiting) == 4
	})
	watcher.expectPayload(t, "lockers/L1/status", `"downstream":"retrying"`)
	loc.full.Store(false)

	acks := backend.acksUntil(t, "m-4")
	if want := []string{"m-1 ok", "m-2 ok", "m-3 ok", "m-4 ok"}; !slices.Equal(acks, want) {
		t.Errorf("acks on the cloud %v; want %v", acks, want)
	}
	// The test's store records a commit once the store returns, which may
	// be after the ack it committed reached the cloud.
	waitUntil(t, "m-4 recorded as committed", func() bool { return len(fs.commits()) >= 4 })
	if got, want := fs.commits(), []string{"m-1", "m-2", "m-3", "m-4"}; !slices.Equal(got, want) {
		t.Errorf("committed %v; want each once, in order: %v", got, want)
	}
	watcher.expectPayload(t, "lockers/L1/status", `"downstream":"ok"`)
	waitUntil(t, "nothing waiting", func() bool {
		return metricValue(t, set2, metricWaiting) == 0 && metricValue(t, set2, metricDelivered) == 4
	})
	metric(set2, metricRetrying, 0)
	metric(set2, metricConnected, 1)
	if !b2.LinkUp() {
		t.Error("the link went down during the local retries")
	}
	waitUntil(t, "outbox empty", outboxEmpty(s))
}

// acksUntil reads the cloud's messages until the ack of last arrives and
// returns the acks in order of arrival as "msg_id ok" or "msg_id error", the
// first of each msg_id only (QoS 1 may repeat one). A snapshot must precede
// the ack of its sync.
func (c *cloudClient) acksUntil(t testing.TB, last string) []string {
	t.Helper()
	var acks []string
	seen := map[string]bool{}
	snapshots := map[string]bool{}
	deadline := time.After(waitFor)
	for {
		select {
		case p := <-c.got:
			switch p.Topic {
			case "lockers/L1/up/snapshot":
				snapshots[contract.MsgIDOf(p.Payload)] = true
			case "lockers/L1/up/acks":
				var a contract.Ack
				if err := json.Unmarshal(p.Payload, &a); err != nil {
					t.Fatalf("bad ack %s: %s", p.Payload, err)
				}
				if seen[a.MsgID] {
					continue
				}
				seen[a.MsgID] = true
				s := a.MsgID + " ok"
				if !a.OK {
					s = a.MsgID + " " + a.Error
				}
				if a.MsgID == "m-1" && !snapshots["m-1"] {
					t.Errorf("the ack of the sync arrived before its snapshot")
				}
				acks = append(acks, s)
				if a.MsgID == last {
					return acks
				}
			}
		case <-deadline:
			t.Fatalf("after %s the ack of %s has not arrived; acks so far: %v", waitFor, last, acks)
		}
	}
}

// TestDownQueueBound: QoS 1 messages always wait in line (the cloud broker
// bounds them by our Receive Maximum); past maxWaiting a QoS 0 one is refused.
func TestDownQueueBound(t *testing.T) {
	var n atomic.Int64
	q := newDownQueue(&n)
	for range maxWaiting {
		if _, ok := q.push(downMsg{qos: 0}); !ok {
			t.Fatal("a QoS 0 message refused below the bound")
		}
	}
	if _, ok := q.push(downMsg{qos: 0}); ok {
		t.Error("a QoS 0 message taken past the bound")
	}
	if _, ok := q.push(downMsg{qos: 1}); !ok {
		t.Error("a QoS 1 message refused past the bound")
	}
	q.pop()
	if got, want := n.Load(), int64(maxWaiting); got != want {
		t.Errorf("waiting gauge %d; want %d", got, want)
	}
}
