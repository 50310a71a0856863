package kerong

import (
	"context"
	"testing"

	"github.com/locky-edge/locky/lockio/kerong/kerongtest"
)

// The board emulator and the pty pair live in kerongtest, which shares no
// code with the driver: its own frame building, its own checksum.

// waitCtx is the context of a test step; it bounds a wait so that a broken
// driver fails the test instead of hanging it.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), kerongtest.WaitLimit)
	t.Cleanup(cancel)
	return ctx
}
