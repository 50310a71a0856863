package metricspush_test

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/goleak"

	"github.com/locky-edge/locky/gateway/metricspush"
	"github.com/locky-edge/locky/gateway/metricspush/vmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeNothing(io.Writer) {}

func TestNewRejectsABadConfig(t *testing.T) {
	f := func(cfg metricspush.Config, want string) {
		t.Helper()
		_, err := metricspush.New(cfg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New(%+v): got %v; want an error naming %q", cfg, err, want)
		}
	}
	const u = "http://vm:8428/api/v1/import/prometheus"
	f(metricspush.Config{LockerID: "L1", Write: writeNothing}, "URL is required")
	f(metricspush.Config{URL: "vm:8428", LockerID: "L1", Write: writeNothing}, "want http(s)://")
	f(metricspush.Config{URL: "ftp://vm/x", LockerID: "L1", Write: writeNothing}, "want http(s)://")
	f(metricspush.Config{URL: u, Write: writeNothing}, "LockerID")
	f(metricspush.Config{URL: u, LockerID: `a"b`, Write: writeNothing}, "LockerID")
	f(metricspush.Config{URL: u, LockerID: "L1"}, "Write is required")
	f(metricspush.Config{URL: u, LockerID: "L1", Write: writeNothing, Interval: -time.Second}, "negative")
}

// roundTrip is an in-memory transport, so that synctest can run the
// intervals on its fake clock.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func answer(status int, body string) *http.Response {
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Body: io.NopCloser(strings.NewReader(body))}
}

// recordingHandler counts the log records of each level.
type recordingHandler struct {
	mu     sync.Mutex
	levels map[slog.Level]int
	last   slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.levels == nil {
		h.levels = map[slog.Level]int{}
	}
	h.levels[r.Level]++
	h.last = r
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.levels[l]
}

func counterValue(t *testing.T, s *metrics.Set, name string) uint64 {
	t.Helper()
	var b strings.Builder
	s.WritePrometheus(&b)
	for line := range strings.Lines(b.String()) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var n uint64
			for _, c := range strings.TrimSpace(v) {
				n = n*10 + uint64(c-'0')
			}
			return n
		}
	}
	t.Fatalf("no %s in:\n%s", name, b.String())
	return 0
}

func TestRunPushesEveryIntervalWithTheLockerLabel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var bodies []string
		var query string
		client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			if r.Header.Get("Content-Encoding") != "gzip" {
				t.Errorf("Content-Encoding %q; want gzip", r.Header.Get("Content-Encoding"))
			}
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Errorf("body is not gzip: %v", err)
				return answer(400, "bad gzip"), nil
			}
			b, err := io.ReadAll(zr)
			if err != nil {
				t.Errorf("read the body: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			bodies = append(bodies, string(b))
			query = r.URL.RawQuery
			return answer(http.StatusNoContent, ""), nil
		})}
		set := metrics.NewSet()
		set.NewCounter("locky_test_total").Inc()
		p, err := metricspush.New(metricspush.Config{
			URL: "http://vm:8428/api/v1/import/prometheus?extra_label=site%3Dberlin", LockerID: "locker-0001",
			Write: set.WritePrometheus, Interval: 30 * time.Second, Metrics: set, Client: client,
		})
		if err != nil {
			t.Fatal(err)
		}
		go p.Run(context.Background())
		time.Sleep(95 * time.Second)
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) != 4 {
			t.Fatalf("%d pushes in 95 s at 30 s; want 4 (at 0, 30, 60, 90 s)", len(bodies))
		}
		if want := "extra_label=site%3Dberlin&extra_label=locker%3Dlocker-0001"; query != want {
			t.Fatalf("query %q; want %q", query, want)
		}
		if !strings.Contains(bodies[0], "locky_test_total 1\n") {
			t.Fatalf("first push:\n%s\nwant locky_test_total 1", bodies[0])
		}
		// Each push carries the results of those before it.
		if !strings.Contains(bodies[3], `locky_metrics_pushes_total{result="ok"} 3`+"\n") {
			t.Fatalf("fourth push:\n%s\nwant locky_metrics_pushes_total{result=\"ok\"} 3", bodies[3])
		}
		if got := counterValue(t, set, `locky_metrics_pushes_total{result="failed"}`); got != 0 {
			t.Fatalf("push errors %d; want 0", got)
		}
	})
}

func TestFailedPushesAreCountedDroppedAndLoggedOncePerPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		down, calls := true, 0
		client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if down {
				return nil, errors.New("network is unreachable")
			}
			return answer(http.StatusNoContent, ""), nil
		})}
		logs := &recordingHandler{}
		set := metrics.NewSet()
		p, err := metricspush.New(metricspush.Config{
			URL: "http://user:secret@vm:8428/api/v1/import/prometheus", LockerID: "L1", Write: set.WritePrometheus,
			Interval: time.Second, Metrics: set, Client: client, Logger: slog.New(logs), LogEvery: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		go p.Run(context.Background())
		time.Sleep(125*time.Second + time.Millisecond) // pushes at 0, 1, …, 125 s
		synctest.Wait()
		if got := counterValue(t, set, `locky_metrics_pushes_total{result="failed"}`); got != 126 {
			t.Fatalf("push errors %d; want 126", got)
		}
		if got := logs.count(slog.LevelWarn); got != 3 {
			t.Fatalf("%d warnings for 126 failures; want 3 (at 0, 60 and 120 s)", got)
		}
		logs.mu.Lock()
		var text strings.Builder
		logs.last.Attrs(func(a slog.Attr) bool { text.WriteString(a.String() + " "); return true })
		logs.mu.Unlock()
		if strings.Contains(text.String(), "secret") || !strings.Contains(text.String(), "failures_not_logged=59") {
			t.Fatalf("last warning %q: want the password hidden and failures_not_logged=59", text.String())
		}

		mu.Lock()
		down = false
		mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := logs.count(slog.LevelInfo); got != 1 {
			t.Fatalf("%d info lines after the link came back; want 1", got)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		// Nothing queued: each failed sample was dropped, one request per interval.
		if calls != 127 {
			t.Fatalf("%d requests; want 127", calls)
		}
		if got := counterValue(t, set, `locky_metrics_pushes_total{result="ok"}`); got != 1 {
			t.Fatalf("successful pushes %d; want 1 (after 126 failed)", got)
		}
	})
}

func TestCloseBeforeRunAndTwice(t *testing.T) {
	p, err := metricspush.New(metricspush.Config{URL: "http://127.0.0.1:1/api/v1/import/prometheus", LockerID: "L1", Write: writeNothing})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatalf("Run after Close: %v; want nil at once", err)
	}
	if err := p.Run(context.Background()); !errors.Is(err, metricspush.ErrRunTwice) {
		t.Fatalf("second Run: %v; want ErrRunTwice", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// The real VictoriaMetrics stores what is pushed, with the locker label, and
// refuses a wrong path, which is counted.
func TestPushToVictoriaMetrics(t *testing.T) {
	vm := vmtest.Start(t)
	set := metrics.NewSet()
	set.NewCounter(`locky_workflow_door_cycles_total`).Add(7)
	set.NewGauge(`locky_build_info{version="1.2.3"}`, func() float64 { return 1 })
	p, err := metricspush.New(metricspush.Config{URL: vm.ImportURL(), LockerID: "locker-0042", Write: set.WritePrometheus, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Push(context.Background()); err != nil {
		t.Fatalf("Push: %v", err)
	}
	got, err := vm.WaitFor(`locky_workflow_door_cycles_total{locker="locker-0042"}`, 15*time.Second, vmtest.NonEmpty)
	if err != nil {
		t.Fatalf("pushed sample not found: %v", err)
	}
	if got[0].Value != 7 {
		t.Fatalf("door cycles %v; want 7", got[0].Value)
	}
	got, err = vm.WaitFor(`locky_build_info{locker="locker-0042"}`, 15*time.Second, vmtest.NonEmpty)
	if err != nil || got[0].Labels["version"] != "1.2.3" {
		t.Fatalf("build info %v, %v; want version 1.2.3", got, err)
	}

	bad, err := metricspush.New(metricspush.Config{URL: vm.URL + "/api/v1/import/nothing", LockerID: "locker-0042",
		Write: set.WritePrometheus, Metrics: set, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Push(context.Background()); err == nil || !strings.Contains(err.Error(), "400") && !strings.Contains(err.Error(), "404") {
		t.Fatalf("push to a wrong path: %v; want VictoriaMetrics' refusal", err)
	}
	if got := counterValue(t, set, `locky_metrics_pushes_total{result="failed"}`); got != 1 {
		t.Fatalf("push errors %d; want 1", got)
	}
}
