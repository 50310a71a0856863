package bridge

import (
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// ackGate is a TCP proxy to the cloud broker that can hold back what the
// broker sends, its PUBACKs among it, while it passes on what the bridge
// sends: the broker takes, and forwards to the back-end, messages whose
// PUBACKs the bridge does not see yet.
type ackGate struct {
	Addr   string
	target string
	ln     net.Listener
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	open  chan struct{} // closed while what the broker sends passes
	conns []net.Conn
}

func newAckGate(t testing.TB, target string) *ackGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen for the gate: %s", err)
	}
	g := &ackGate{Addr: ln.Addr().String(), target: target, ln: ln, done: make(chan struct{}), open: make(chan struct{})}
	close(g.open)
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(func() {
		close(g.done)
		_ = g.ln.Close()
		g.mu.Lock()
		for _, c := range g.conns {
			_ = c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

// hold holds back what the broker sends from now on, until pass.
func (g *ackGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

// pass lets through what was held and what follows.
func (g *ackGate) pass() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *ackGate) opened() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func (g *ackGate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s, err := net.Dial("tcp", g.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		g.mu.Lock()
		g.conns = append(g.conns, c, s)
		g.mu.Unlock()
		g.wg.Add(2)
		go g.pipe(s, c, false)
		go g.pipe(c, s, true)
	}
}

// pipe copies src to dst until either fails, each read waiting for the gate
// when gated; then it closes both.
func (g *ackGate) pipe(dst, src net.Conn, gated bool) {
	defer g.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if gated {
				select {
				case <-g.opened():
				case <-g.done:
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestInflightNotDropped: messages published and not yet acknowledged
// survive the outbox's byte bound, whether their PUBACKs are late or their
// link dies; what the back-end received is counted delivered, never
// dropped, and delivered and dropped add up to what the locker produced.
func TestInflightNotDropped(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	gate := newAckGate(t, cloud.Addr)
	proxy := testenv.NewProxy(t, gate.Addr)
	backend := newCloudClient(t, cloud.URL(), "backend", "", "", "lockers/+/up/#")

	probe := newStore(t)
	appendEvents(t, probe, 1)
	st, err := probe.OutboxStats()
	if err != nil {
		t.Fatal(err)
	}
	bound := 10 * st.Bytes // about ten events
	var dropped atomic.Int64
	s := openStore(t, filepath.Join(t.TempDir(), "db"), func(c *store.Config) {
		c.OutboxMaxBytes, c.OnDrop = bound, func(_ string, n int) { dropped.Add(int64(n)) }
	})

	const window = 8
	set := metrics.NewSet()
	b := startBridge(t, Config{URL: proxy.URL(), Outbox: s, Local: newLocal(t), Metrics: set, Window: window})
	waitUntil(t, "link up", b.LinkUp)

	received := map[uint64]bool{} // event ids the back-end got
	receive := func() int {
		for {
			select {
			case p := <-backend.got:
				if p.Topic != eventTopic("L1") {
					continue
				}
				var ev contract.Event
				if err := json.Unmarshal(p.Payload, &ev); err != nil {
					t.Fatalf("bad event %q: %s", p.Payload, err)
				}
				id, err := strconv.ParseUint(ev.EventID, 10, 64)
				if err != nil {
					t.Fatalf("bad event id %q", ev.EventID)
				}
				received[id] = true
			default:
				return len(received)
			}
		}
	}
	inflight := func() bool { return metricValue(t, set, metricInflight) == window }
	// heldFirst checks that the outbox still starts with the messages in
	// flight, first to first+window-1, and is over its bound.
	heldFirst := func(first uint64) {
		t.Helper()
		msgs, err := s.OutboxAfter(0, window)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, m := range msgs {
			got = append(got, m.Seq)
		}
		if len(got) != window || got[0] != first || got[window-1] != first+window-1 {
			t.Fatalf("outbox starts with %v; want the %d messages in flight from %d", got, window, first)
		}
		if st, err := s.OutboxStats(); err != nil || st.Bytes <= bound {
			t.Fatalf("OutboxStats: got %+v, %v; want over the bound of %d while messages are in flight", st, err, bound)
		}
	}
	produced := 0
	produce := func(n int) { appendEvents(t, s, n); produced += n }

	// PUBACKs late: the broker has the messages, the bridge waits for their
	// PUBACKs, and the locker fills the outbox past its bound meanwhile.
	gate.hold()
	produce(window)
	waitUntil(t, "a window in flight", inflight)
	waitUntil(t, "the back-end got the messages in flight", func() bool { return receive() == window })
	produce(4 * window)
	if dropped.Load() == 0 {
		t.Fatalf("nothing dropped; want the outbox over its bound")
	}
	heldFirst(1)
	gate.pass()
	waitUntil(t, "outbox drained", outboxEmpty(s))

	// The link dies with messages in flight: they are released, and the
	// bound applies to them again.
	first := uint64(produced + 1)
	proxy.Blackhole()
	produce(window)
	waitUntil(t, "a window in flight into the blackhole", inflight)
	produce(4 * window)
	heldFirst(first)
	proxy.Cut()
	waitUntil(t, "link down", func() bool { return !b.LinkUp() })
	produce(1)
	if st, err := s.OutboxStats(); err != nil || st.Bytes > bound {
		t.Fatalf("OutboxStats after the link dropped: got %+v, %v; want within the bound of %d", st, err, bound)
	}
	if msgs, err := s.OutboxAfter(0, 1); err != nil || len(msgs) != 1 || msgs[0].Seq < first+window {
		t.Fatalf("outbox starts with %v, %v; want the released messages %d.. dropped", msgs, err, first)
	}
	proxy.Restore()
	waitUntil(t, "outbox drained after the reconnect", outboxEmpty(s))

	delivered := func() int { return int(metricValue(t, set, metricUpDelivered)) }
	waitUntil(t, "every message counted", func() bool { return delivered()+int(dropped.Load()) == produced })
	waitUntil(t, "the back-end got every message delivered", func() bool { return receive() >= delivered() })
	// Every delivered message was received; so as many received as
	// delivered means that none received was counted dropped.
	if got, want := receive(), delivered(); got != want {
		t.Errorf("the back-end got %d messages; want the %d counted delivered (%d dropped of %d)", got, want, dropped.Load(), produced)
	}
	if got := metricValue(t, set, metricUnmapped); got != 0 {
		t.Errorf("%s = %v; want 0", metricUnmapped, got)
	}
	t.Logf("%d produced: %d delivered, %d dropped", produced, delivered(), dropped.Load())
}

// TestDeliveredCountsRemovals: the remover counts what its deletions found,
// not what it was asked to delete: a message removed before (acknowledged
// twice, on two connections) or dropped by a bound counts nowhere again.
func TestDeliveredCountsRemovals(t *testing.T) {
	s := newStore(t)
	set := metrics.NewSet()
	b, err := New(Config{LockerID: "L1", URL: "mqtt://127.0.0.1:1", Outbox: s, Local: newLocal(t), Metrics: set, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, s, 4)
	if n, err := s.OutboxDelivered(2); err != nil || n != 1 {
		t.Fatalf("OutboxDelivered(2): got %d, %v; want 1", n, err)
	}
	rm := newRemover(b)
	for _, seq := range []uint64{1, 2, 3, 3} {
		rm.add(seq)
	}
	rm.discard(4)
	rm.discard(2)
	rm.flush()
	f := func(name string, want float64) {
		t.Helper()
		if got := metricValue(t, set, name); got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
	f(metricUpDelivered, 2)
	f(metricUnmapped, 1)
	if !outboxEmpty(s)() {
		t.Errorf("outbox not empty after the flush")
	}
}
