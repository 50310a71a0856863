package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// syncBuffer is a bytes.Buffer that several handlers may write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// teeHandler writes every record to each of its handlers.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(context.Context, slog.Level) bool { return true }

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range t {
		errs = append(errs, h.Handle(ctx, r.Clone()))
	}
	return errors.Join(errs...)
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}

// capture returns a debug-level logger writing text and JSON lines.
func capture() (*slog.Logger, *syncBuffer, *syncBuffer) {
	text, js := new(syncBuffer), new(syncBuffer)
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	return slog.New(teeHandler{slog.NewTextHandler(text, opts), slog.NewJSONHandler(js, opts)}), text, js
}

func TestRedact(t *testing.T) {
	f := func(a slog.Attr, want, never string) {
		t.Helper()
		var buf bytes.Buffer
		log := slog.New(newLogHandler(slog.NewJSONHandler(&buf, nil), func() {}))
		log.Info("m", a)
		log.With(a).Info("m")
		got := buf.String()
		if !strings.Contains(got, want) || never != "" && strings.Contains(got, never) {
			t.Errorf("%s logged as %s; want it to contain %q and never %q", a.Key, got, want, never)
		}
	}
	code := []byte(`{"code":"493817"}`)
	b64 := base64.StdEncoding.EncodeToString(code)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "locky/down/x", Payload: code, PacketID: 7}
	f(slog.Any("pk", pk), `Publish topic=\"locky/down/x\" qos=1 retain=false id=7 payload=17 bytes (not logged)`, b64)
	f(slog.Any("packet", &pk), "payload=17 bytes", b64)
	f(slog.Any("will", mqtt.Will{TopicName: "w", Payload: code}), "will topic=", b64)
	f(slog.Any("data", code), "17 bytes (not logged)", b64)
	f(slog.Group("g", slog.Any("pk", pk)), "payload=17 bytes", b64)
	f(slog.Any("props", pk.Properties), "packets.Properties (not logged)", "")
	f(slog.String("payload", "493817"), "(not logged)", "493817")
	f(slog.Any("error", packets.ErrNotAuthorized), "not authorized", "")
	f(slog.String("client", "kiosk"), "kiosk", "")
}

func TestLogLineWithoutMessageGetsOne(t *testing.T) {
	var buf bytes.Buffer
	slog.New(newLogHandler(slog.NewJSONHandler(&buf, nil), func() {})).Warn("", "error", "EOF")
	var line struct{ Msg string }
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line.Msg != noMessage {
		t.Errorf("line %s: msg %q; want %q", buf.String(), line.Msg, noMessage)
	}
}

func TestLogThrottle(t *testing.T) {
	var buf bytes.Buffer
	suppressed := 0
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := newLogHandlerAt(slog.NewTextHandler(&buf, nil), func() { suppressed++ }, func() time.Time { return now })
	log := slog.New(h).With("component", "broker")
	for range 100 {
		log.Warn("client refused")
	}
	log.Warn("other line") // another message has its own burst
	count := func(s string) int { return strings.Count(buf.String(), s) }
	if got := count(`msg="client refused"`); got != logBurst {
		t.Errorf("%d lines in the first window; want %d", got, logBurst)
	}
	now = now.Add(logWindow)
	log.Warn("client refused")
	if !strings.Contains(buf.String(), `message="client refused" suppressed=90`) {
		t.Errorf("no summary of the 90 suppressed lines before the next window's first:\n%s", buf.String())
	}
	if got := count(`msg="client refused"`); got != logBurst+1 {
		t.Errorf("%d lines after the second window began; want %d", got, logBurst+1)
	}
	for range 20 {
		log.Warn("client refused")
	}
	h.flush()
	if !strings.Contains(buf.String(), `suppressed=11`) || suppressed != 101 {
		t.Errorf("flush: counted %d suppressed; want 101, and a summary of 11:\n%s", suppressed, buf.String())
	}
	if count("component=broker") != count("\n") {
		t.Errorf("a line lost the logger's attributes:\n%s", buf.String())
	}
}

// limCheap are hash costs that keep the tests fast.
var limCheap = Argon2Params{Memory: 64, Time: 1, Threads: 1}

// TestLogsOfAttacksHoldNoCodeAndStayBounded attacks a real broker as the
// issue did: a code published where the client may not, a code retained
// past the cap, and a script failing logins; the log, as text and JSON,
// must never hold the code and must stay small.
func TestLogsOfAttacksHoldNoCodeAndStayBounded(t *testing.T) {
	hash, err := HashPassword("kiosk-pw", limCheap)
	if err != nil {
		t.Fatal(err)
	}
	log, text, js := capture()
	b, set := startLimited(t, Config{Users: []User{{Name: "kiosk", Role: "screen", PasswordHash: hash}}, MaxRetained: 1, Logger: log})
	if err := b.Publish("locky/doors/1/state", []byte("closed"), true, 1); err != nil { // the retained cap is reached
		t.Fatal(err)
	}
	const code = "493817"
	payload := []byte(`{"code":"` + code + `","request_id":"r1"}`)

	// MQTT 3.1.1, QoS 1, a forbidden topic: mochi disconnects and logs the packet.
	raw := rawDial(t, b.Addr(), "")
	if rc := raw.connack(t, 4, "kiosk", "kiosk", "kiosk-pw"); rc != 0 {
		t.Fatalf("kiosk CONNACK %d", rc)
	}
	raw.send(t, publishPacket(4, "locky/down/reservations", payload, 1, false))
	for { // mochi sends a DISCONNECT (which MQTT 3.1.1 does not have) and closes
		if _, _, err := raw.packet(); err != nil {
			break
		}
	}

	// MQTT 5, retained past the cap: mochi logs the packet refused by the hook.
	c, ca := limConnect(t, b.Addr(), "", paho.ClientConfig{})
	if c != nil || ca.ReasonCode == 0 {
		t.Fatalf("an anonymous client connected outside dev mode")
	}
	kiosk := paho.NewClient(paho.ClientConfig{Conn: dialFrom(t, b.Addr(), "")})
	ctx, cancel := context.WithTimeout(context.Background(), limWait)
	defer cancel()
	if _, err := kiosk.Connect(ctx, &paho.Connect{ClientID: "kiosk-2", CleanStart: true, Username: "kiosk", UsernameFlag: true,
		Password: []byte("kiosk-pw"), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	for _, qos := range []byte{0, 1} {
		_, _ = kiosk.Publish(ctx, &paho.Publish{Topic: "locky/screen/code", QoS: qos, Retain: true, Payload: payload})
	}
	awaitMetric(t, set, `locky_broker_publishes_refused_total{reason="retained_topic"}`, 2)
	_ = kiosk.Disconnect(&paho.Disconnect{})

	// A script failing logins.
	const attempts = 1000
	for i := range attempts {
		c := dialFrom(t, b.Addr(), "")
		if _, err := c.Write(connectPacket(4, "", "kiosk", "guess-"+string(rune('a'+i%26)))); err == nil {
			_, _, _ = (&rawClient{c: c, r: bufio.NewReader(c)}).packet() // the CONNACK or the close
		}
		c.Close()
	}
	b.Close() // writes the summaries

	f := func(name, out string) {
		t.Helper()
		for _, never := range []string{code, base64.StdEncoding.EncodeToString(payload), base64.StdEncoding.EncodeToString([]byte(code))} {
			if strings.Contains(out, never) {
				t.Errorf("the %s log holds %q:\n%s", name, never, out)
			}
		}
		if !strings.Contains(out, "Publish topic=") {
			t.Errorf("the %s log has no line about the refused packets:\n%s", name, out)
		}
	}
	f("text", text.String())
	f("json", js.String())
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) > 100 {
		t.Errorf("%d log lines for %d failed logins; want at most 100:\n%s", len(lines), attempts, text.String())
	}
	for _, l := range lines {
		var rec struct{ Msg string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || strings.TrimSpace(rec.Msg) == "" {
			t.Errorf("a line without a message: %s", l)
		}
	}
	if !strings.Contains(text.String(), "suppressed similar log lines") {
		t.Errorf("no summary of suppressed lines:\n%s", text.String())
	}
}
