package logthrottle_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/logthrottle"
)

// TestThrottle lets a burst of each line through, sums up the rest when the
// window ends, and lets an inner throttle's summaries through an outer one.
func TestThrottle(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	suppressed := 0
	outer := logthrottle.New(slog.NewTextHandler(&buf, nil), logthrottle.Config{Burst: 3, Window: time.Minute, Now: clock,
		OnSuppressed: func() { suppressed++ }})
	inner := logthrottle.New(outer, logthrottle.Config{Burst: 2, Window: time.Minute, Now: clock})
	root, broker := slog.New(outer).With("component", "web"), slog.New(inner)
	for range 50 {
		root.Warn("refused")
	}
	for i := range 20 { // as many inner summaries as the outer burst lets lines through, and more
		broker.Warn("inner " + string(rune('a'+i)))
		broker.Warn("inner " + string(rune('a'+i)))
		broker.Warn("inner " + string(rune('a'+i)))
	}
	inner.Flush()
	now = now.Add(time.Minute)
	root.Warn("refused")
	outer.Flush()
	count := func(s string) int { t.Helper(); return strings.Count(buf.String(), s) }
	f := func(s string, want int) {
		t.Helper()
		if got := count(s); got != want {
			t.Errorf("%d lines with %s; want %d:\n%s", got, s, want, buf.String())
		}
	}
	f(`msg=refused component=web`, 4)
	f(`message=refused suppressed=47`, 1)
	f(`msg="`+logthrottle.SummaryMessage+`" message="inner `, 20)
	if suppressed != 47 {
		t.Errorf("OnSuppressed called %d times; want 47", suppressed)
	}
}
