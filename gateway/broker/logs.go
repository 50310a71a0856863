package broker

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/locky-edge/locky/gateway/logthrottle"
)

// logHandler is the handler of the broker's logger, the one mochi logs
// through. Three habits of mochi v2.7.9 turn its log against the locker,
// and the handler undoes them:
//
//   - it logs refused packets whole (attributes "pk", "packet", "will"): a
//     code published to a forbidden topic landed in the log, in base64 with
//     the JSON format. Every value of a mochi type (errors excepted) and
//     every []byte is replaced by a description without its payload, and so
//     is any attribute named payload or password;
//   - its listeners log each failed connection as a WARN line with an empty
//     message (the broker's own listener does not, but any line without a
//     message gets one);
//   - nothing is throttled: a script failing logins wrote 21 177 lines in
//     3 s. Each (level, message) passes logBurst times per logWindow
//     (package logthrottle); the rest are counted, and one line
//     "suppressed similar log lines" sums them up when the window ends (or
//     at Close).
type logHandler struct {
	next slog.Handler // the throttle, then the broker's logger
	th   *logthrottle.Handler
}

// The throttle of the broker's log: per (level, message), logBurst lines
// per logWindow. At most about one line a second per kind of line reaches
// the SD card whatever a client does.
const (
	logBurst  = 10
	logWindow = 10 * time.Second
)

// noMessage is the message given to a line logged without one.
const noMessage = "broker event (logged without a message)"

func newLogHandler(next slog.Handler, onSuppressed func()) *logHandler {
	return newLogHandlerAt(next, onSuppressed, time.Now)
}

func newLogHandlerAt(next slog.Handler, onSuppressed func(), now func() time.Time) *logHandler {
	th := logthrottle.New(next, logthrottle.Config{Burst: logBurst, Window: logWindow, Now: now, OnSuppressed: onSuppressed})
	return &logHandler{next: th, th: th}
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	msg := r.Message
	if strings.TrimSpace(msg) == "" {
		msg = noMessage
	}
	out := slog.NewRecord(r.Time, r.Level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redact(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redact(a)
	}
	return &logHandler{next: h.next.WithAttrs(red), th: h.th}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{next: h.next.WithGroup(name), th: h.th}
}

// flush writes the summaries of every line suppressed so far.
func (h *logHandler) flush() { h.th.Flush() }

// mochiPkg is the import path prefix of mochi's packages.
const mochiPkg = "github.com/mochi-mqtt/server/v2"

// redact returns a without anything that may carry a payload.
func redact(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	if k := strings.ToLower(a.Key); k == "payload" || k == "password" {
		return slog.String(a.Key, "(not logged)")
	}
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, x := range g {
			red[i] = redact(x)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		if s, ok := describe(v.Any()); ok {
			return slog.String(a.Key, s)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// describe returns what may be logged of x, and whether x must be replaced
// by it: a packet's kind, topic and sizes, never its payload.
func describe(x any) (string, bool) {
	switch p := x.(type) {
	case error:
		return "", false
	case packets.Packet:
		return describePacket(&p), true
	case *packets.Packet:
		if p == nil {
			return "nil packet", true
		}
		return describePacket(p), true
	case mqtt.Will:
		return fmt.Sprintf("will topic=%q qos=%d retain=%t payload=%d bytes (not logged)", p.TopicName, p.Qos, p.Retain, len(p.Payload)), true
	case []byte:
		return fmt.Sprintf("%d bytes (not logged)", len(p)), true
	}
	t := reflect.TypeOf(x)
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map) {
		t = t.Elem()
	}
	if t != nil && strings.HasPrefix(t.PkgPath(), mochiPkg) {
		return fmt.Sprintf("%T (not logged)", x), true
	}
	return "", false
}

func describePacket(p *packets.Packet) string {
	kind := packets.PacketNames[p.FixedHeader.Type]
	if p.FixedHeader.Type == packets.Publish {
		return fmt.Sprintf("%s topic=%q qos=%d retain=%t id=%d payload=%d bytes (not logged)",
			kind, p.TopicName, p.FixedHeader.Qos, p.FixedHeader.Retain, p.PacketID, len(p.Payload))
	}
	return fmt.Sprintf("%s id=%d (not logged)", kind, p.PacketID)
}
