package gateway_test

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestMetricsExistFromTheStart reads /metrics of a gateway with a bridge and
// a metrics push, before anything happened and after a workload. Every
// family has its # HELP (with a text, for locky_) and # TYPE once, before
// its samples; a counter ends in _total and nothing else does; the
// histograms have their buckets from the start; no series is born later;
// and the families are those README.md lists.
func TestMetricsExistFromTheStart(t *testing.T) {
	vm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer vm.Close()
	cfg := testConfig(t)
	cfg.CloudURL = "mqtt://127.0.0.1:1" // nothing listens: the link stays down
	cfg.MetricsPushURL = vm.URL + "/api/v1/import/prometheus"
	g := startGateway(t, cfg)

	start := parseExposition(t, scrape(t, g))
	histograms := []string{"locky_workflow_code_to_command_seconds", "locky_workflow_code_to_open_seconds", "locky_store_commit_seconds"}
	for _, h := range histograms {
		f := start[h]
		if f == nil || f.typ != "histogram" {
			t.Errorf("%s: %+v; want a histogram", h, f)
			continue
		}
		inf, ok := f.samples[h+`_bucket{le="+Inf"}`]
		if !ok || f.samples[h+"_count"] != inf || !slices.ContainsFunc(slices.Collect(maps.Keys(f.samples)), func(s string) bool {
			return strings.HasPrefix(s, h+`_bucket{le="0.`)
		}) {
			t.Errorf("%s at the start: %v; want its le buckets up to +Inf, _sum and _count", h, f.samples)
		}
	}
	for _, h := range histograms[:2] {
		if n := start[h].samples[h+"_count"]; n != 0 {
			t.Errorf("%s_count %v before any code; want 0", h, n)
		}
	}

	var locky []string
	for name, f := range start {
		if !strings.HasPrefix(name, "locky_") {
			continue
		}
		locky = append(locky, name)
		if f.help == "" {
			t.Errorf("%s: no # HELP text", name)
		}
		if want := strings.HasSuffix(name, "_total"); (f.typ == "counter") != want {
			t.Errorf("%s: # TYPE %s; a counter ends in _total, and only a counter does", name, f.typ)
		}
	}
	slices.Sort(locky)
	if help := slices.Sorted(maps.Keys(gateway.MetricHelp)); !slices.Equal(locky, help) {
		t.Errorf("/metrics has the locky_ families\n%v\nand the help texts are for\n%v", locky, help)
	}
	if listed := readmeFamilies(t); !slices.Equal(locky, listed) {
		t.Errorf("/metrics has the locky_ families\n%v\nand README.md's Observability lists\n%v", locky, listed)
	}

	// A workload: an upsert, a door cycle, a wrong code, a forced door.
	c := connect(t, g.MQTTAddr(), contract.TopicAcks, contract.TopicEvents, contract.TopicScreenDisplay)
	c.MustAck("reservations", reservation("m-1", "R1", 1, 2, "100001", "100002", "100003"))
	c.Code("100001", "r1")
	c.Display("r1", contract.ResultOpened)
	g.SimDoor(t, 2, "close")
	c.Event(contract.EventStored, "R1", 2)
	c.Code("999999", "r2")
	c.Display("r2", contract.ResultInvalidCode)
	g.SimDoor(t, 5, "force")
	c.Event(contract.EventForcedOpen, "", 5)

	after := parseExposition(t, scrape(t, g))
	for _, h := range histograms[:2] {
		if n := after[h].samples[h+"_count"]; n != 1 {
			t.Errorf("%s_count %v after one door opened for a code; want 1", h, n)
		}
	}
	for name, f := range after {
		if !strings.HasPrefix(name, "locky_") {
			continue
		}
		for s := range f.samples {
			if _, ok := start[name].samples[s]; !ok {
				t.Errorf("%s appeared after the start", s)
			}
		}
	}
}

// family is one metric family of an exposition.
type family struct {
	help, typ string
	samples   map[string]float64 // by series, as written
}

// parseExposition reads the Prometheus text format strictly enough for the
// test: each family's # HELP and # TYPE once, at its head, then its samples
// and no other family's.
func parseExposition(t *testing.T, text string) map[string]*family {
	t.Helper()
	out := map[string]*family{}
	var cur string // the family whose samples may follow
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, help, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if out[name] != nil {
				t.Errorf("%s: a second # HELP", name)
			}
			out[name] = &family{help: help, samples: map[string]float64{}}
			cur = ""
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			f := out[name]
			if f == nil || f.typ != "" {
				t.Errorf("%s: # TYPE %s without its # HELP just before, or a second one", name, typ)
				continue
			}
			f.typ, cur = typ, name
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			i := strings.LastIndexByte(line, ' ')
			series, value := line[:max(i, 0)], line[i+1:]
			var v float64
			if _, err := fmt.Sscan(value, &v); i < 0 || err != nil {
				t.Errorf("line %q: no value", line)
				continue
			}
			name, _, _ := strings.Cut(series, "{")
			f := out[cur]
			if f == nil || !(name == cur || (f.typ == "histogram" || f.typ == "summary") &&
				slices.Contains([]string{cur + "_bucket", cur + "_sum", cur + "_count"}, name)) {
				t.Errorf("line %q: not under its family's # TYPE (after %q)", line, cur)
				continue
			}
			f.samples[series] = v
		}
	}
	return out
}

// readmeFamilies returns the locky_ names in README.md's Observability
// section, sorted, each once.
func readmeFamilies(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Observability\n")
	if !ok {
		t.Fatal("README.md has no Observability section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	names := regexp.MustCompile(`locky_[a-z_]*[a-z]`).FindAllString(section, -1)
	slices.Sort(names)
	return slices.Compact(names)
}

func scrape(t *testing.T, g *testGateway) string {
	t.Helper()
	resp, err := http.Get("http://" + g.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s %v", resp.Status, err)
	}
	return string(b)
}
