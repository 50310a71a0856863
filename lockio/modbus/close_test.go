package modbus

import (
	"testing"
)

// TestCloseDropsTheOpensNotSent queues an open for a door whose serial
// adapter is missing, so that its bus goroutine cannot send it: Close
// drops it, counted, rather than leaving it for a bus that no longer runs.
func TestCloseDropsTheOpensNotSent(t *testing.T) {
	const device = "/dev/null-does-not-exist"
	b, events := startBank(t, Door{Door: 1, Device: device, Unit: 1})
	await(t, events, 1, fault, "unplugged")
	if err := b.Open(1); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, b, `locky_modbus_opens_dropped_total{bus="`+device+`"}`); got != 1 {
		t.Errorf("opens dropped at Close: got %v; want 1", got)
	}
}
