package gateway

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
)

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !g.Ready() {
			http.Error(w, "not ready: starting or stopping", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		g.writeMetrics(w)
	})
	if g.sim != nil {
		mux.Handle("/sim/", g.sim.Handler())
	}
	mux.Handle("/", g.web.Handler()) // the locker page, the kiosk and their API (lockio/web)
	return mux
}

// writeMetrics writes every metric of the gateway in Prometheus text format.
func (g *Gateway) writeMetrics(w io.Writer) {
	metrics.WriteProcessMetrics(w)
	g.metrics.WritePrometheus(w)
}

// registerMetrics adds the process-wide and store gauges. Store figures come
// from one read of the database per second at most, however many gauges ask.
func (g *Gateway) registerMetrics() {
	s := g.metrics
	s.NewGauge(`locky_build_info{version="`+Version+`",commit="`+Commit+`"}`, func() float64 { return 1 })
	s.NewGauge("locky_gateway_uptime_seconds", func() float64 { return time.Since(g.started).Seconds() })
	s.NewGauge("locky_gateway_ready", func() float64 {
		if g.Ready() {
			return 1
		}
		return 0
	})
	var mu sync.Mutex
	var at time.Time
	var counts map[string]int
	var ob struct {
		depth  int
		bytes  int64
		oldest time.Time
	}
	refresh := func() {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < time.Second && counts != nil {
			return
		}
		at = time.Now()
		if c, err := g.store.CountByStatus(); err == nil {
			counts = c
		}
		if st, err := g.store.OutboxStats(); err == nil {
			ob.depth, ob.bytes, ob.oldest = st.Depth, st.Bytes, st.Oldest
		}
	}
	for _, st := range []string{contract.StatusArriving, contract.StatusStored, contract.StatusDelivered,
		contract.StatusReturned, contract.StatusCancelled} {
		s.NewGauge(`locky_store_reservations{status="`+st+`"}`, func() float64 {
			refresh()
			mu.Lock()
			defer mu.Unlock()
			return float64(counts[st])
		})
	}
	s.NewGauge("locky_store_db_size_bytes", func() float64 {
		_, size := g.store.Stats()
		return float64(size)
	})
	s.NewGauge("locky_outbox_messages", func() float64 { refresh(); mu.Lock(); defer mu.Unlock(); return float64(ob.depth) })
	s.NewGauge("locky_outbox_bytes", func() float64 { refresh(); mu.Lock(); defer mu.Unlock(); return float64(ob.bytes) })
	s.NewGauge("locky_outbox_oldest_age_seconds", func() float64 {
		refresh()
		mu.Lock()
		defer mu.Unlock()
		if ob.oldest.IsZero() {
			return 0
		}
		return time.Since(ob.oldest).Seconds()
	})
}
