package gateway_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// TestFullDiskClosingCommitsOnceSpaceReturns fills the data dir's filesystem
// (a 2 MiB tmpfs) while a courier has a door open, closes it, and checks
// that the locker says it is degraded, answers a downstream message, and once
// space is back completes the closing by itself: the door never reports again.
func TestFullDiskClosingCommitsOnceSpaceReturns(t *testing.T) {
	dir := testenv.SmallDisk(t, "2m")
	cfg := testConfig(t)
	cfg.DataDir = dir
	g := startGateway(t, cfg)
	cl := connect(t, g.MQTTAddr(), "locky/up/#", contract.TopicScreenDisplay)
	cl.MustAck("reservations", reservation("m-1", "R1", 1, 7, "123456", "654321", "777000"))
	cl.Code("123456", "r1")
	cl.Display("r1", contract.ResultOpened)

	filler := filepath.Join(dir, "filler")
	testenv.FillDisk(t, filler)
	// bbolt reuses the pages that earlier commits freed, which need no new
	// space: commit until one fails, so that none is left for the closing.
	for i := 0; ; i++ {
		if i == 100000 {
			t.Fatal("commits still succeed on a full disk after 100000 acks")
		}
		_, err := g.Store().Ack(time.Now(), fmt.Sprintf("filler-%d", i), errors.New("filler"))
		if err == nil {
			continue
		}
		if !store.IsNoSpace(err) {
			t.Fatalf("a commit on a full disk failed with %v; want ENOSPC", err)
		}
		break
	}

	g.SimDoor(t, 7, "close")
	awaitReadyz(t, g, func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "store degraded (no_space)") &&
			g.Store().Health().Pending > 0
	})
	if st := statusOf(t, g, "R1"); st != contract.StatusArriving {
		t.Fatalf("R1 is %q while the disk is full; want arriving (the closing is not committed)", st)
	}
	cl.Code("123456", "r2")
	if d := cl.Display("r2", contract.ResultBusy); d.Door != 7 {
		t.Fatalf("the deposit code while the closing waits: %+v; want busy for door 7", d)
	}
	if m := metricsText(t, g); !strings.Contains(m, "\nlocky_store_degraded 1\n") ||
		strings.Contains(m, `locky_store_commit_failures_total{reason="no_space"} 0`) {
		t.Fatalf("/metrics while the disk is full lacks locky_store_degraded 1 or counts no no_space failure:\n%s", grepLines(m, "locky_store_"))
	}
	// A downstream upsert now: it is answered at once with the error when
	// that ack fits in the database's free pages, or its ack is held.
	held := g.Store().Health().Pending
	cl.Publish(contract.TopicDownPrefix+"reservations", reservation("m-2", "R2", 1, 8, "223456", "254321", "277000"))
	isM2 := func(p []byte) bool { var a contract.Ack; return json.Unmarshal(p, &a) == nil && a.MsgID == "m-2" }
	awaitReadyz(t, g, func(code int, _ string) bool {
		return code == http.StatusServiceUnavailable && (g.Store().Health().Pending > held || cl.Count(contract.TopicAcks, isM2) > 0)
	})

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if a := cl.Ack("m-2"); a.OK || !strings.Contains(a.Error, "send it again") {
		t.Fatalf("ack of the upsert sent while the disk was full: %+v; want ok:false saying to send it again", a)
	}
	if ev := cl.Event(contract.EventStored, "R1", 7); ev.Status != contract.StatusStored {
		t.Fatalf("event %+v; want R1 stored", ev)
	}
	recovered := cl.Event(contract.EventStoreRecovered, "", 0)
	if !strings.HasPrefix(recovered.Reason, "no_space") {
		t.Fatalf("store.recovered %+v; want its reason to say no_space", recovered)
	}
	awaitReadyz(t, g, func(code int, _ string) bool { return code == http.StatusOK })
	if st := statusOf(t, g, "R1"); st != contract.StatusStored {
		t.Fatalf("R1 is %q after space returned; want stored", st)
	}
	if m := metricsText(t, g); !strings.Contains(m, "\nlocky_store_degraded 0\n") {
		t.Fatalf("/metrics after space returned lacks locky_store_degraded 0:\n%s", grepLines(m, "locky_store_"))
	}
	// The back-end sends the refused message again, and now it is stored.
	cl.MustAck("reservations", reservation("m-3", "R2", 1, 8, "223456", "254321", "277000"))

	g.Stop(t)
	checkDatabase(t, filepath.Join(dir, "locky.db"))
}

// awaitReadyz polls /readyz until ok accepts its answer, within waitLimit.
func awaitReadyz(t *testing.T, g *testGateway, ok func(code int, body string) bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	var code int
	var body string
	for {
		resp, err := http.Get("http://" + g.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, body = resp.StatusCode, string(b)
		if ok(code, body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz answers %d %q; health %+v", code, body, g.Store().Health())
		}
		time.Sleep(20 * time.Millisecond) // the poll interval, not a wait for an event
	}
}

func metricsText(t *testing.T, g *testGateway) string {
	t.Helper()
	resp, err := http.Get("http://" + g.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// checkDatabase runs the store's check (store.CheckFile: bbolt's
// consistency check, every reservation decodes, the indexes and the outbox's
// booking) on a closed database.
func checkDatabase(t *testing.T, path string) {
	t.Helper()
	if err := store.CheckFile(path); err != nil {
		t.Fatalf("database check: %v", err)
	}
}
