// Package logthrottle bounds how many lines a logger writes: a slog.Handler
// that lets each (level, message) through Burst times per Window, counts the
// rest and sums them up in one line, "suppressed similar log lines", when
// the window ends (at the next line logged after it) or at Flush. Whatever a
// client makes a component log, about Burst lines per Window per kind of line
// reach the disk.
//
// Its place in the layering: part of the assembly (gateway/), which hands the
// throttled logger to every part; it imports nothing of the locker.
package logthrottle

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// SummaryMessage is the message of the line that sums up suppressed lines.
// Such lines always pass a Handler: an inner Handler's summaries, bounded
// already, are not throttled again by an outer one.
const SummaryMessage = "suppressed similar log lines"

// Config configures a Handler.
type Config struct {
	Burst        int              // lines per (level, message) and window; 0 means 10
	Window       time.Duration    // 0 means 10 s
	Now          func() time.Time // nil means time.Now
	OnSuppressed func()           // called for each line left out; nil means nothing
}

// Handler is the throttling slog.Handler. The handlers that WithAttrs and
// WithGroup return share its counts.
type Handler struct {
	next slog.Handler
	t    *throttle
}

// New returns a Handler writing to next.
func New(next slog.Handler, cfg Config) *Handler {
	if cfg.Burst <= 0 {
		cfg.Burst = 10
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnSuppressed == nil {
		cfg.OnSuppressed = func() {}
	}
	return &Handler{next: next, t: &throttle{cfg: cfg, keys: map[key]*window{}}}
}

func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	return h.t.handle(ctx, h.next, r)
}

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), t: h.t}
}

func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), t: h.t}
}

// Flush writes the summaries of every line suppressed so far.
func (h *Handler) Flush() {
	h.t.mu.Lock()
	due := h.t.expire(h.t.cfg.Now(), true)
	h.t.mu.Unlock()
	for _, s := range due {
		_ = s.h.Handle(context.Background(), s.r) // a failing log has nowhere to report to
	}
}

// maxKeys bounds the table of windows; past it, lines of new messages share
// one entry.
const maxKeys = 256

const otherMessages = "(other messages)"

type throttle struct {
	cfg  Config
	mu   sync.Mutex
	keys map[key]*window
}

type key struct {
	level slog.Level
	msg   string
}

type window struct {
	start          time.Time
	n, suppressed  int
	h              slog.Handler // of the last line, for the summary
	level          slog.Level
	msg            string
	lastSuppressed time.Time
}

type summary struct {
	h slog.Handler
	r slog.Record
}

func (t *throttle) handle(ctx context.Context, h slog.Handler, r slog.Record) error {
	if r.Message == SummaryMessage {
		return h.Handle(ctx, r)
	}
	now := t.cfg.Now()
	t.mu.Lock()
	due := t.expire(now, false)
	k := key{r.Level, r.Message}
	w := t.keys[k]
	if w == nil && len(t.keys) >= maxKeys {
		k = key{r.Level, otherMessages}
		w = t.keys[k]
	}
	if w == nil {
		w = &window{start: now, level: k.level, msg: k.msg}
		t.keys[k] = w
	}
	w.n++
	w.h = h
	pass := w.n <= t.cfg.Burst
	if !pass {
		w.suppressed++
		w.lastSuppressed = r.Time
	}
	t.mu.Unlock()
	for _, s := range due {
		if err := s.h.Handle(ctx, s.r); err != nil {
			return err
		}
	}
	if !pass {
		t.cfg.OnSuppressed()
		return nil
	}
	return h.Handle(ctx, r)
}

// expire ends the windows begun a window ago or more (all of them if all)
// and returns the summaries of those that suppressed lines.
func (t *throttle) expire(now time.Time, all bool) []summary {
	var out []summary
	for k, w := range t.keys {
		if !all && now.Sub(w.start) < t.cfg.Window {
			continue
		}
		delete(t.keys, k)
		if w.suppressed == 0 {
			continue
		}
		r := slog.NewRecord(now, w.level, SummaryMessage, 0)
		r.AddAttrs(slog.String("message", w.msg), slog.Int("suppressed", w.suppressed),
			slog.Duration("window", t.cfg.Window), slog.Time("last", w.lastSuppressed))
		out = append(out, summary{w.h, r})
	}
	return out
}
