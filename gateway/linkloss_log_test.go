package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestLinkLossLogsWhyTheLinkWentDown cuts the link to a real Mosquitto: the
// warning that the link is down carries the error that took it down, not
// <nil> (the client reports that error only after it has closed).
func TestLinkLossLogsWhyTheLinkWentDown(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	proxy := testenv.NewProxy(t, cloud.Addr)
	cfg := testConfig(t)
	cfg.LockerID = "locker-l"
	cfg.CloudURL = proxy.URL()
	logs := &recordedLogs{changed: make(chan struct{}, 1)}
	g, err := gateway.New(cfg, slog.New(recordingHandler{logs: logs}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	// The link serves once the locker acks a message that the back-end left
	// retained for it: the bridge has subscribed and delivers.
	local := gatewaytest.Connect(t, g.MQTTAddr(), contract.TopicAcks)
	backend := gatewaytest.Connect(t, cloud.Addr)
	backend.PublishWith(&paho.Publish{Topic: "lockers/locker-l/down/sync", QoS: 1, Retain: true, Payload: []byte(`{"msg_id":"s-1"}`)})
	local.Ack("s-1")
	proxy.Cut()
	down := logs.await(t, "cloud link down; reconnecting")
	var reason string
	down.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			reason = fmt.Sprint(a.Value.Any())
		}
		return true
	})
	if reason == "" || strings.Contains(reason, "<nil>") {
		t.Errorf("the link-down warning says error=%q; want the error that took the link down", reason)
	}
}

// recordedLogs keeps every log record of a gateway, for a test to await.
type recordedLogs struct {
	mu      sync.Mutex
	records []slog.Record
	changed chan struct{}
}

// await returns the first record whose message starts with msg.
func (l *recordedLogs) await(t *testing.T, msg string) slog.Record {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		l.mu.Lock()
		for _, r := range l.records {
			if strings.HasPrefix(r.Message, msg) {
				l.mu.Unlock()
				return r
			}
		}
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-deadline:
			t.Fatalf("no log line %q", msg)
		}
	}
}

// recordingHandler is a slog.Handler that keeps records in logs.
type recordingHandler struct {
	logs  *recordedLogs
	attrs []slog.Attr
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.logs.mu.Lock()
	h.logs.records = append(h.logs.records, r)
	h.logs.mu.Unlock()
	select {
	case h.logs.changed <- struct{}{}:
	default:
	}
	return nil
}

func (h recordingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return recordingHandler{logs: h.logs, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h recordingHandler) WithGroup(string) slog.Handler { return h }
