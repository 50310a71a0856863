package modbus

import (
	"errors"
	"testing"
	"time"

	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

func TestScan(t *testing.T) {
	bus := modbustest.StartBus(t, "1,2")
	bus.Do("set 2 3 1")
	// A generous timeout: python on a busy machine.
	reports, err := Scan(t.Context(), bus.Device, Config{Timeout: 2 * time.Second}, []int{1, 2, 3})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(reports) != 3 {
		t.Fatalf("got %d reports; want 3", len(reports))
	}
	for i, want := range []string{"00000000", "00010000", ""} {
		r := reports[i]
		var got []byte
		for _, in := range r.Inputs {
			got = append(got, map[bool]byte{false: '0', true: '1'}[in])
		}
		if r.Unit != i+1 || string(got) != want {
			t.Fatalf("report %d: got unit %d inputs %q; want unit %d inputs %q", i, r.Unit, got, i+1, want)
		}
		if (want == "") != errors.Is(r.Err, ErrTimeout) || want != "" && r.Err != nil {
			t.Fatalf("unit %d: got error %v", r.Unit, r.Err)
		}
	}
}
