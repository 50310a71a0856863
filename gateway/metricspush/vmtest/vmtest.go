// Package vmtest runs a real VictoriaMetrics (the Debian package's
// /usr/bin/victoria-metrics) for tests: on a free loopback port, with a
// temporary data dir, optionally scraping targets every second, and with
// freshly written samples queryable at once. It is stopped by t.Cleanup.
//
// Its place in the layering: test support; it imports only testenv, and the
// tests of metricspush, the gateway and the dashboards use it.
package vmtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
)

// Path is where the Debian package installs VictoriaMetrics.
const Path = "/usr/bin/victoria-metrics"

// startTimeout bounds the wait for /health and for the process to exit.
const startTimeout = 20 * time.Second

// Target is an address that VictoriaMetrics scrapes (GET /metrics) every
// second, and the labels it adds to every scraped sample.
type Target struct {
	Addr   string
	Labels map[string]string
}

// VM is a running VictoriaMetrics.
type VM struct {
	// URL is http://127.0.0.1:port, without a trailing slash.
	URL    string
	client *http.Client
}

// Start runs VictoriaMetrics scraping the targets (job "locky"). The test
// fails, naming the package to install, when it is not installed (apt-get
// install victoria-metrics). Its log is shown if the test failed.
func Start(t testing.TB, targets ...Target) *VM {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Fatalf("victoria-metrics is not installed (apt-get install -y victoria-metrics): %s", err)
	}
	dir := t.TempDir()
	port := testenv.FreePort(t)
	p := startProcess(t, commandArgs(t, dir, port, targets), filepath.Join(dir, "vm.log"))
	vm := &VM{URL: "http://127.0.0.1:" + strconv.Itoa(port), client: &http.Client{Timeout: 10 * time.Second}}
	t.Cleanup(vm.client.CloseIdleConnections)
	vm.waitHealthy(t, p)
	return vm
}

// commandArgs are the options of a VictoriaMetrics with its data in dir,
// listening on port and scraping the targets (whose config it writes in dir).
func commandArgs(t testing.TB, dir string, port int, targets []Target) []string {
	t.Helper()
	args := []string{
		"-storageDataPath=" + filepath.Join(dir, "data"),
		"-httpListenAddr=127.0.0.1:" + strconv.Itoa(port),
		"-search.latencyOffset=0s", // samples are queryable as soon as they are written
		"-search.disableCache",
		"-loggerLevel=WARN",
	}
	if len(targets) > 0 {
		conf := filepath.Join(dir, "scrape.yml")
		if err := os.WriteFile(conf, scrapeConfig(targets), 0o600); err != nil {
			t.Fatalf("cannot write the scrape config: %s", err)
		}
		args = append(args, "-promscrape.config="+conf)
	}
	return args
}

// process is a started VictoriaMetrics.
type process struct {
	exited  chan struct{} // closed when it has exited
	waitErr error         // why it exited, once exited is closed
}

// startProcess starts VictoriaMetrics with args, its output in logPath, and
// stops it in t.Cleanup, showing the log if the test failed.
func startProcess(t testing.TB, args []string, logPath string) *process {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("cannot create the VictoriaMetrics log: %s", err)
	}
	cmd := exec.Command(Path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("cannot start VictoriaMetrics: %s", err)
	}
	p := &process{exited: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); _ = logf.Close(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.exited:
		case <-time.After(startTimeout):
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			if out, err := os.ReadFile(logPath); err == nil {
				t.Logf("VictoriaMetrics log:\n%s", out)
			}
		}
	})
	return p
}

// waitHealthy polls /health until it answers 200, and fails the test if p
// exits or startTimeout passes first.
func (vm *VM) waitHealthy(t testing.TB, p *process) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		select {
		case <-p.exited:
			t.Fatalf("VictoriaMetrics exited at start: %v (see its log)", p.waitErr)
		default:
		}
		if resp, err := vm.client.Get(vm.URL + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("VictoriaMetrics not healthy after %s", startTimeout)
		}
		time.Sleep(delay) // polling interval, not a wait for an event
	}
}

func scrapeConfig(targets []Target) []byte {
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: locky\n  static_configs:\n")
	for _, tg := range targets {
		fmt.Fprintf(&b, "  - targets: [%q]\n", tg.Addr)
		if len(tg.Labels) > 0 {
			b.WriteString("    labels:\n")
			names := make([]string, 0, len(tg.Labels))
			for n := range tg.Labels {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(&b, "      %s: %q\n", n, tg.Labels[n])
			}
		}
	}
	return []byte(b.String())
}

// ImportURL is the endpoint that metricspush posts to.
func (vm *VM) ImportURL() string { return vm.URL + "/api/v1/import/prometheus" }

// Sample is one series of an instant query's answer.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query runs an instant query at now. A query that does not parse, or that
// VictoriaMetrics refuses, is an error naming VictoriaMetrics' reason.
func (vm *VM) Query(ctx context.Context, expr string) ([]Sample, error) {
	resp, raw, err := vm.postQuery(ctx, expr)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("status %s, not JSON: %.300s", resp.Status, raw)
	}
	if r.Status != "success" {
		if resp.StatusCode/100 == 4 {
			return nil, &QueryError{Status: resp.Status, Reason: r.Error}
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, r.Error)
	}
	return parseResult(r.Data.ResultType, r.Data.Result)
}

// postQuery posts the instant query expr at now and returns the response,
// its body read into raw and closed.
func (vm *VM) postQuery(ctx context.Context, expr string) (resp *http.Response, raw []byte, err error) {
	form := url.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(time.Now().UnixMilli())/1000, 'f', 3, 64)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, vm.URL+"/api/v1/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = vm.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, raw, nil
}

// parseResult reads the data.result of a query's answer: a vector or a
// scalar.
func parseResult(resultType string, result json.RawMessage) ([]Sample, error) {
	switch resultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(result, &vec); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(vec))
		for _, s := range vec {
			v, err := parseValue(s.Value[1])
			if err != nil {
				return nil, err
			}
			out = append(out, Sample{Labels: s.Metric, Value: v})
		}
		return out, nil
	case "scalar":
		var sc [2]any
		if err := json.Unmarshal(result, &sc); err != nil {
			return nil, err
		}
		v, err := parseValue(sc[1])
		if err != nil {
			return nil, err
		}
		return []Sample{{Value: v}}, nil
	}
	return nil, fmt.Errorf("result type %q; want vector or scalar", resultType)
}

// QueryError is VictoriaMetrics refusing a query (it does not parse, an
// unknown function...): asking again does not help.
type QueryError struct {
	Status string
	Reason string
}

func (e *QueryError) Error() string { return e.Status + ": " + e.Reason }

func parseValue(v any) (float64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, errors.New("a sample value that is not a string")
	}
	return strconv.ParseFloat(s, 64)
}

// Flush makes the samples received so far searchable. Without it this
// VictoriaMetrics release shows new series only after about ten seconds.
func (vm *VM) Flush(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, vm.URL+"/internal/force_flush", nil)
	if err != nil {
		return err
	}
	resp, err := vm.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/internal/force_flush: %s", resp.Status)
	}
	return nil
}

// WaitFor polls expr, flushing before each query, until ok accepts its
// answer or timeout passes, and returns the last answer and the reason it was
// not accepted. A query that VictoriaMetrics refuses returns at once.
func (vm *VM) WaitFor(expr string, timeout time.Duration, ok func([]Sample) bool) ([]Sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last []Sample
	var lastErr error
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		if lastErr = vm.Flush(ctx); lastErr == nil {
			last, lastErr = vm.Query(ctx, expr)
		}
		if lastErr == nil && ok(last) {
			return last, nil
		}
		if _, refused := errors.AsType[*QueryError](lastErr); refused {
			return nil, lastErr
		}
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = fmt.Errorf("no acceptable answer within %s; last: %v", timeout, last)
			}
			return last, lastErr
		case <-time.After(delay): // polling interval, not a wait for an event
		}
	}
}

// NonEmpty accepts an answer with at least one series.
func NonEmpty(s []Sample) bool { return len(s) > 0 }
