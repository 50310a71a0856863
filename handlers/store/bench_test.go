package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// BenchmarkLookupCode looks codes up among n reservations: the index makes
// the cost independent of n.
func BenchmarkLookupCode(b *testing.B) {
	for _, n := range []int{10, 1_000, 100_000} {
		b.Run(fmt.Sprintf("reservations=%d", n), func(b *testing.B) {
			s := openTestStore(b)
			loadReservations(b, s, n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i = i%n + 1
				r, _, err := s.LookupCode(codeOf('2', i))
				if err != nil || r == nil {
					b.Fatalf("LookupCode: got %v, %v", r, err)
				}
			}
		})
	}
}

// BenchmarkDoorCycle measures the writes of one door cycle (the door opens,
// then closes: cycle, audit, reservation and event), committed with fsync as
// in production.
func BenchmarkDoorCycle(b *testing.B) {
	s := openStore(b, testConfig(b), false)
	seed(b, s)
	upsert(b, s, t0(), newRes("R1", 1, dep0, pick0, cour0))
	runCycle(b, s, t0(), 1, "R1", contract.KindDeposit, toStored())
	b.ReportAllocs()
	now := t0()
	for b.Loop() {
		now = now.Add(time.Second)
		c := store.Cycle{Door: 1, Reservation: "R1", Kind: contract.KindCourier, RequestID: "r", OpenedAt: now}
		if _, err := s.DoorOpened(now, c, nil); err != nil {
			b.Fatalf("DoorOpened: %v", err)
		}
		if _, _, err := s.CloseCycle(now, 1, func(store.Cycle, *store.Reservation) store.Transition { return reopened() }); err != nil {
			b.Fatalf("CloseCycle: %v", err)
		}
	}
}
