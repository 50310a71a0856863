package store_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

func TestAFullDiskDegradesTheStoreUntilItCommitsAgain(t *testing.T) {
	dir := testenv.SmallDisk(t, "1m")
	set := metrics.NewSet()
	cfg := testConfig(t)
	cfg.Path, cfg.Metrics = filepath.Join(dir, "locky.db"), set
	s := openStore(t, cfg, false)
	if _, err := s.Ack(t0(), "m-0", nil); err != nil {
		t.Fatal(err)
	}
	testenv.FillDisk(t, filepath.Join(dir, "filler"))
	var failed error
	for i := 0; failed == nil; i++ {
		if i == 100000 {
			t.Fatal("commits still succeed on a full disk after 100000 acks")
		}
		_, failed = s.Ack(t0(), "m-fill", errors.New("filler"))
	}
	if !store.IsNoSpace(failed) {
		t.Fatalf("commit on a full disk: %v; want ENOSPC through bbolt", failed)
	}
	h := s.Health()
	if !h.Degraded || h.Reason != store.FailureNoSpace || h.Failures != 1 || h.Since.IsZero() {
		t.Fatalf("health %+v; want degraded, no_space, 1 failure", h)
	}
	var b strings.Builder
	set.WritePrometheus(&b)
	for _, want := range []string{"locky_store_degraded 1\n", `locky_store_commit_failures_total{reason="no_space"} 1` + "\n"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("metrics lack %q:\n%s", want, b.String())
		}
	}
	// A handler holds a write for retry: the store stays degraded even
	// though other commits succeed, until it says it holds none.
	s.SetPending("controller", 1)
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ack(t0(), "m-1", nil); err != nil {
		t.Fatalf("commit once space returned: %v", err)
	}
	if h := s.Health(); !h.Degraded || h.Pending != 1 {
		t.Fatalf("health %+v with a write held; want degraded", h)
	}
	if n := countEvents(t, s, contract.EventStoreRecovered); n != 0 {
		t.Fatalf("%d store.recovered events while a write is held; want 0", n)
	}
	s.SetPending("controller", 0)
	if h := s.Health(); h.Degraded {
		t.Fatalf("health %+v; want not degraded once nothing is held", h)
	}
	if n := countEvents(t, s, contract.EventStoreRecovered); n != 1 {
		t.Fatalf("%d store.recovered events; want 1", n)
	}
	s.SetPending("controller", 0)
	if n := countEvents(t, s, contract.EventStoreRecovered); n != 1 {
		t.Fatalf("%d store.recovered events after a second all-clear; want still 1", n)
	}
}

func countEvents(t *testing.T, s *store.Store, typ string) int {
	t.Helper()
	msgs, err := s.OutboxAfter(0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range msgs {
		var e contract.Event
		if m.Topic == contract.TopicEvents && json.Unmarshal(m.Payload, &e) == nil && e.Type == typ {
			n++
		}
	}
	return n
}
