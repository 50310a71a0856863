package contract_test

import (
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
)

// The code request is the hot path: every key press of Enter on the screen.
func BenchmarkDecodeCodeRequest(b *testing.B) {
	payload := []byte(`{"code":"482913","request_id":"r-0001"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := contract.DecodeCodeRequest(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDownReservation(b *testing.B) {
	payload := []byte(down("upsert", "reservation", validReservation))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := contract.DecodeDown("reservations", payload); err != nil {
			b.Fatal(err)
		}
	}
}

// The worst a door client can send: 64 KiB of small values the door state
// does not know, which the key check still walks.
func BenchmarkDecodeDoorStateLarge(b *testing.B) {
	payload := []byte(`{"state":"open","x":[` + strings.Repeat("1,", contract.MaxPayload/2-20) + `1]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := contract.DecodeDoorState(payload); err != nil {
			b.Fatal(err)
		}
	}
}
