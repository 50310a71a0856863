package bridge

import (
	"log/slog"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
)

// BenchmarkReplay appends 10 000 events while the link is cut, restores it
// and reports how fast the outbox replays to a real Mosquitto (configured like
// docker/cloud-mosquitto): from the restore until every event is acknowledged
// and removed from the outbox. That the back-end got them all, in order, is
// checked outside the timing.
func BenchmarkReplay(b *testing.B) {
	const n = 10000
	cloud := testenv.StartMosquitto(b, testenv.WithConfig("max_inflight_messages 100"))
	proxy := testenv.NewProxy(b, cloud.Addr)
	backend := newCloudClient(b, cloud.URL(), "backend", "", "", "lockers/+/up/#")
	s := newStore(b)
	br := startBridge(b, Config{URL: proxy.URL(), Outbox: s, Local: newLocal(b), Logger: slog.New(slog.DiscardHandler)})
	waitUntil(b, "link up", br.LinkUp)

	var total time.Duration
	first := uint64(1)
	for i := 0; i < b.N; i++ {
		proxy.Cut()
		waitUntil(b, "link down", func() bool { return !br.LinkUp() })
		appendEvents(b, s, n)
		start := time.Now()
		proxy.Restore()
		waitUntil(b, "outbox empty", outboxEmpty(s))
		total += time.Since(start)
		backend.expectEvents(b, eventTopic("L1"), first, n)
		first += n
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
}
