package store

import (
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
)

// registerMetrics creates the store's gauges and counters in set: the
// reservations by status, the database size, the outbox's depth, bytes and
// oldest wait, and the drops of the outbox bounds. The gauges that walk the
// database share one read per second however often they are scraped. A set
// keeps the gauges of the first store registered on it (a set per store).
func (s *Store) registerMetrics(set *metrics.Set) {
	s.droppedBy = map[string]*metrics.Counter{
		"bytes": set.GetOrCreateCounter(`locky_outbox_dropped_total{reason="bytes"}`),
		"age":   set.GetOrCreateCounter(`locky_outbox_dropped_total{reason="age"}`),
	}
	var mu sync.Mutex
	var at time.Time
	var counts map[string]int
	var ob OutboxStats
	read := func(fn func()) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) >= time.Second || counts == nil {
			at = time.Now()
			if c, err := s.CountByStatus(); err == nil {
				counts = c
			}
			if st, err := s.OutboxStats(); err == nil {
				ob = st
			}
		}
		fn()
	}
	for _, st := range []string{contract.StatusArriving, contract.StatusStored, contract.StatusDelivered,
		contract.StatusReturned, contract.StatusCancelled} {
		set.GetOrCreateGauge(`locky_store_reservations{status="`+st+`"}`, func() (v float64) {
			read(func() { v = float64(counts[st]) })
			return v
		})
	}
	set.GetOrCreateGauge("locky_store_db_size_bytes", func() float64 {
		_, size := s.Stats()
		return float64(size)
	})
	set.GetOrCreateGauge("locky_outbox_messages", func() (v float64) { read(func() { v = float64(ob.Depth) }); return v })
	set.GetOrCreateGauge("locky_outbox_bytes", func() (v float64) { read(func() { v = float64(ob.Bytes) }); return v })
	set.GetOrCreateGauge("locky_outbox_oldest_age_seconds", func() (v float64) {
		read(func() { v = ob.Waited.Seconds() }) // a wall clock that steps moves nothing here
		return v
	})
}
