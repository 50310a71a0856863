package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/gateway/store"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startLocker runs a locker's bridge and a stand-in for its store handlers:
// every downstream message is acked through the outbox, refused when its
// JSON has "fail".
func startLocker(t *testing.T, brokerURL, id string) *store.Store {
	t.Helper()
	s, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "db"), CodeKey: make([]byte, 32), Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	local := testenv.StartMochi(t)
	err = local.Subscribe("locky/down/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		var m struct {
			MsgID string `json:"msg_id"`
			Fail  bool   `json:"fail"`
		}
		var refusal error
		if err := json.Unmarshal(pk.Payload, &m); err != nil || m.Fail {
			refusal = errors.New("refused by the test locker")
		}
		if _, err := s.Ack(time.Now(), m.MsgID, refusal); err != nil {
			t.Errorf("ack: %s", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.New(bridge.Config{LockerID: id, URL: brokerURL, Outbox: s, Local: local, Version: "v-test", Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(context.Background()) }()
	t.Cleanup(func() { _ = b.Close(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !b.LinkUp() {
		if time.Now().After(deadline) {
			t.Fatal("the locker's bridge did not connect")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	return s
}

func lockyctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestSend(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	startLocker(t, cloud.URL(), "L1")
	f := func(wantCode int, wantOut string, args ...string) {
		t.Helper()
		code, out, errOut := lockyctl(t, append([]string{"--url", cloud.URL(), "--timeout", "10s"}, args...)...)
		if code != wantCode || !strings.Contains(out, wantOut) {
			t.Errorf("lockyctl %v: got exit %d, stdout %q, stderr %q; want exit %d and stdout with %q",
				args, code, out, errOut, wantCode, wantOut)
		}
	}
	f(0, `"msg_id":"m-1","ok":true`, "send-reservation", "--locker", "L1", "--json", `{"msg_id":"m-1","op":"upsert"}`)
	f(0, `"msg_id":"ctl-`, "send-door", "--locker", "L1", "--json", `{"op":"upsert","door":{"id":1}}`)
	f(0, `"ok":true`, "send-command", "--locker", "L1", "--json", `{"command":"open_door","door":1}`)
	f(0, `"msg_id":"m-2","ok":true`, "send", "--locker", "L1", "--entity", "partners", "--json", `{"msg_id":"m-2"}`)
	f(1, `"msg_id":"m-3","ok":false`, "send-reservation", "--locker", "L1", "--json", `{"msg_id":"m-3","fail":true}`)
	f(2, ``, "send", "--locker", "L1", "--json", `{}`)                           // no entity
	f(2, ``, "send-door", "--locker", "L1/x", "--json", `{}`)                    // bad id
	f(2, ``, "send-door", "--locker", "L1", "--json", `[1]`)                     // not an object
	f(2, ``, "frobnicate")                                                       // unknown command
	f(2, ``, "--url", "http://x", "send-door", "--locker", "L1", "--json", `{}`) // bad URL
}

func TestSendTimeout(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	code, _, errOut := lockyctl(t, "--url", cloud.URL(), "--timeout", "200ms",
		"send-door", "--locker", "nobody", "--json", `{"op":"upsert"}`)
	if code != 1 || !strings.Contains(errOut, "no ack") {
		t.Errorf("got exit %d, stderr %q; want 1 and a timeout message", code, errOut)
	}
}

// syncBuffer is a buffer that a test may read while run writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestWatch(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	s := startLocker(t, cloud.URL(), "L1")
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"--url", cloud.URL(), "watch", "--locker", "L1", "--count", "3"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "watching") {
		if time.Now().After(deadline) {
			t.Fatalf("watch did not subscribe: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	for i := range 3 {
		if _, _, err := s.AppendEvent(time.Now(), contract.Event{Type: contract.EventStored, Door: i + 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("watch exit %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not see 3 events")
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines; want 3:\n%s", len(lines), stdout.String())
	}
	for i, l := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q: %s", l, err)
		}
		if ev["locker"] != "L1" || ev["type"] != contract.EventStored || ev["door"] != float64(i+1) {
			t.Errorf("line %d: %s; want a reservation.stored event of L1 for door %d", i, l, i+1)
		}
	}
}

func TestOnline(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	startLocker(t, cloud.URL(), "L1")
	startLocker(t, cloud.URL(), "L2")
	startLockerThenStop(t, cloud.URL(), "L3")
	code, out, errOut := lockyctl(t, "--url", cloud.URL(), "online")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "L1\tv-test\t") || !strings.HasPrefix(lines[1], "L2\tv-test\t") {
		t.Errorf("online printed %q; want L1 and L2 (not L3) with version and time", out)
	}
}

// startLockerThenStop runs a locker until it is connected, then stops it: its
// retained status turns offline.
func startLockerThenStop(t *testing.T, brokerURL, id string) {
	t.Helper()
	s, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "db3"), CodeKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	b, err := bridge.New(bridge.Config{LockerID: id, URL: brokerURL, Outbox: s, Local: testenv.StartMochi(t), Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for !b.LinkUp() {
		if time.Now().After(deadline) {
			t.Fatal("the locker's bridge did not connect")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	_ = b.Close()
	<-done
}
