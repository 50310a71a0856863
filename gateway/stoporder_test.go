package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// logWatch is a slog handler that keeps every line (message and attributes,
// as text) so that a test can await one, and passes warnings on to the
// test's log.
type logWatch struct {
	rec   *logLines
	attrs string
	next  slog.Handler
}

type logLines struct {
	mu    sync.Mutex
	lines []string
	ch    chan struct{}
}

func newLogWatch(t *testing.T) *logWatch {
	return &logWatch{rec: &logLines{ch: make(chan struct{}, 1)}, next: testenv.QuietLogger(t).Handler()}
}

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (w *logWatch) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message + w.attrs)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	w.rec.mu.Lock()
	w.rec.lines = append(w.rec.lines, b.String())
	w.rec.mu.Unlock()
	select {
	case w.rec.ch <- struct{}{}:
	default:
	}
	if w.next.Enabled(ctx, r.Level) {
		return w.next.Handle(ctx, r)
	}
	return nil
}

func (w *logWatch) WithAttrs(as []slog.Attr) slog.Handler {
	s := w.attrs
	for _, a := range as {
		s += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return &logWatch{rec: w.rec, attrs: s, next: w.next.WithAttrs(as)}
}

func (w *logWatch) WithGroup(name string) slog.Handler {
	return &logWatch{rec: w.rec, attrs: w.attrs, next: w.next.WithGroup(name)}
}

// await returns the first line that match accepts, or fails the test.
func (w *logWatch) await(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		w.rec.mu.Lock()
		lines := append([]string(nil), w.rec.lines...)
		w.rec.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l
			}
		}
		select {
		case <-w.rec.ch:
		case <-deadline:
			t.Fatalf("no log line %s within %s", what, waitLimit)
		}
	}
}

// TestStopAwaitsTheDoorCommanded stops the gateway gracefully while a door
// it commanded has not opened yet (a slow lock), and opens that door as late
// as the stop lets it: once the gateway says it awaits the door, or, if it
// does not wait, once its broker has stopped. The opening is recorded all
// the same: after a restart on the same data dir the door's cycle completes,
// the deposit is stored with its event in the outbox, and the code was
// handled once. A code entered during the stop opens nothing.
func TestStopAwaitsTheDoorCommanded(t *testing.T) {
	cfg := testConfig(t)
	cfg.DoorTimeout = 2 * waitLimit // the door opens long before: no fault
	cfg.StopWait = 2 * waitLimit    // nor does the stop give up on it first
	logs := newLogWatch(t)
	g, ran := runGateway(t, cfg, slog.New(logs))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 7, "700001", "700002", "700003"))
	c.MustAck("reservations", reservation("m-2", "R2", 1, 8, "800001", "800002", "800003"))

	if err := g.Sim().Jam(7, true); err != nil { // the lock is slow: the command is not obeyed yet
		t.Fatal(err)
	}
	c.Code("700001", "r1")
	c.Await(contract.DoorCommandTopic(7), func(p []byte) bool { return strings.Contains(string(p), `"r1"`) })

	closed := make(chan error, 1)
	go func() { closed <- g.Close() }()
	line := logs.await(t, "saying the stop awaits door 7, or that the broker stopped", func(l string) bool {
		return strings.Contains(l, "awaiting the doors commanded") && strings.Contains(l, "doors=[7]") ||
			strings.HasPrefix(l, "stopped step=broker ")
	})
	if strings.HasPrefix(line, "stopped") {
		t.Errorf("the broker stopped while door 7, commanded, had not reported open")
	} else {
		c.Code("800001", "late") // a courier at door 8 while the locker stops
		if d := c.Display("late", contract.ResultBusy); d.Door != 0 {
			t.Errorf("a code entered during the stop was answered %+v; want busy, no door", d)
		}
	}
	if err := g.Sim().Force(7); err != nil { // the slow lock opens at last
		t.Fatal(err)
	}
	for _, done := range []<-chan error{ran, closed} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("the gateway stopped with %v", err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("the gateway did not stop within %s", waitLimit)
		}
	}
	if n := c.Count(contract.DoorCommandTopic(8), anyPayload); n != 0 {
		t.Errorf("%d commands for door 8 during the stop; want none", n)
	}

	g2 := startGateway(t, cfg)
	c2 := connect(t, g2.MQTTAddr(), contract.TopicScreenDisplay)
	// The pickup code opens door 7 only if the deposit was stored; it is
	// handled after the door's closing that the restart reports.
	c2.Code("700002", "pickup")
	c2.Display("pickup", contract.ResultOpened)
	if got := statusOf(t, g2, "R1"); got != contract.StatusStored {
		t.Fatalf("R1 is %q after the restart; want stored", got)
	}
	checkStoredOnce(t, g2, "R1", "r1")
}

// checkStoredOnce checks that the outbox holds one stored event for the
// reservation, that the audit trail has one opening for the code request
// and no forced opening.
func checkStoredOnce(t *testing.T, g *testGateway, id, requestID string) {
	t.Helper()
	msgs, err := g.Store().OutboxAfter(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, m := range msgs {
		var e contract.Event
		if m.Topic == contract.TopicEvents && json.Unmarshal(m.Payload, &e) == nil {
			switch {
			case e.Type == contract.EventStored && e.Reservation == id:
				stored++
			case e.Type == contract.EventForcedOpen:
				t.Errorf("event %s in the outbox: the door's opening was not recorded", m.Payload)
			}
		}
	}
	if stored != 1 {
		t.Errorf("%d %s events for %s in the outbox; want 1", stored, contract.EventStored, id)
	}
	trail, _, err := g.Store().AuditTrail()
	if err != nil {
		t.Fatal(err)
	}
	opened := 0
	for _, a := range trail {
		if a.RequestID == requestID && a.Result == contract.ResultOpened {
			opened++
		}
	}
	if opened != 1 {
		t.Errorf("%d openings audited for request %s; want 1:\n%+v", opened, requestID, trail)
	}
}
