package kerong

import (
	"errors"
	"testing"
	"time"

	"github.com/locky-edge/locky/lockio/kerong/kerongtest"
)

func TestScan(t *testing.T) {
	socat := kerongtest.StartSocat(t, t.TempDir())
	emu := kerongtest.NewEmulator(t, map[byte]int{0: 16, 5: 24, 9: 8})
	emu.SetOpen(5, 3, true)
	emu.SetCorrupt(9, true)
	emu.Attach(socat.B)
	t.Cleanup(emu.Detach)

	reports, err := Scan(waitCtx(t), socat.A, Bus{ResponseTimeout: 300 * time.Millisecond}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(reports) != 11 {
		t.Fatalf("got %d reports; want 11", len(reports))
	}
	f := func(addr, channels int, wantErr error) {
		t.Helper()
		r := reports[addr]
		if r.Addr != addr {
			t.Fatalf("report %d is of address %d", addr, r.Addr)
		}
		if !errors.Is(r.Err, wantErr) || (wantErr == nil) != (r.Err == nil) {
			t.Fatalf("board %d: got error %v; want %v", addr, r.Err, wantErr)
		}
		if r.Channels != channels || len(r.Set) != channels {
			t.Fatalf("board %d: got %d channels (%d bits); want %d", addr, r.Channels, len(r.Set), channels)
		}
	}
	for a := range 11 {
		switch a {
		case 0:
			f(a, 16, nil)
		case 5:
			f(a, 24, nil)
		case 9:
			f(a, 0, ErrBadChecksum)
		default:
			f(a, 0, ErrNoAnswer)
		}
	}
	// The emulator sets a closed door's bit: every channel but 3 of board 5.
	for ch, set := range reports[5].Set {
		if want := ch+1 != 3; set != want {
			t.Fatalf("board 5 channel %d: got bit %v; want %v", ch+1, set, want)
		}
	}
}

func TestScanRefusesBadAddress(t *testing.T) {
	_, err := Scan(t.Context(), "/nonexistent", Bus{}, []int{32})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("got %v; want ErrConfig", err)
	}
}
