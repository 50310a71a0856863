package bridge

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// throttle logs a repeating error at most once per period, saying how many
// were left out since, so that a dead uplink does not fill the SD card.
type throttle struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	last    time.Time
	skipped int
}

func (t *throttle) Log(level slog.Level, msg string, args ...any) {
	t.mu.Lock()
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		t.skipped++
		t.mu.Unlock()
		return
	}
	skipped := t.skipped
	t.last, t.skipped = now, 0
	t.mu.Unlock()
	if skipped > 0 {
		args = append(args, "repeats_not_logged", skipped)
	}
	t.log.Log(context.Background(), level, msg, args...)
}

// reset makes the next error log at once (the condition it reports ended).
func (t *throttle) reset() {
	t.mu.Lock()
	t.last, t.skipped = time.Time{}, 0
	t.mu.Unlock()
}
