package gateway_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestAWallClockStepDropsNothingFromTheOutbox: with the cloud link down, a
// locker queues door events; while it is stopped, every wall-clock time in
// its outbox is moved 31 days into the past (what a locker without RTC sees
// when it booted at an old time and NTP then corrected its clock). Restarted
// with an outbox age bound of an hour, it drops none of them, and the cloud
// gets every one once the link is back.
func TestAWallClockStepDropsNothingFromTheOutbox(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	proxy := testenv.NewProxy(t, cloud.Addr)
	proxy.Cut()
	backend := connect(t, cloud.Addr, "lockers/locker-9/up/#")

	cfg := testConfig(t)
	cfg.LockerID = "locker-9"
	cfg.CloudURL = proxy.URL()
	cfg.CloudRetryMax = time.Second // reconnect soon after the link is back
	cfg.OutboxMaxAge = time.Hour
	g := startGateway(t, cfg)
	local := connect(t, g.MQTTAddr(), contract.TopicEvents)
	for door := 1; door <= cfg.SimDoors; door++ {
		g.SimDoor(t, door, "force")
		local.Event(contract.EventForcedOpen, "", door)
	}
	g.Stop(t)

	queued := stepOutboxClock(t, filepath.Join(cfg.DataDir, "locky.db"), -31*24*time.Hour)
	events := 0
	for _, m := range queued {
		if m.topic == contract.TopicEvents {
			events++
		}
	}
	if events < cfg.SimDoors {
		t.Fatalf("the outbox holds %d events; want the %d door.forced_open at least", events, cfg.SimDoors)
	}

	g = startGateway(t, cfg)
	// The gateway prunes at start; prune again, the wall clock 31 days on.
	if _, err := g.Store().Prune(time.Now().AddDate(0, 0, 31)); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	st, err := g.Store().OutboxStats()
	if err != nil || st.Depth != len(queued) {
		t.Fatalf("OutboxStats after the restart: got %+v, %v; want all %d messages still queued", st, err, len(queued))
	}
	if got, want := metricLine(t, g.HTTPAddr(), `locky_outbox_dropped_total{reason="age"}`), "0"; got != want {
		t.Fatalf(`locky_outbox_dropped_total{reason="age"}: got %s; want %s`, got, want)
	}

	proxy.Restore()
	for _, m := range queued {
		topic := "lockers/locker-9/up/" + strings.TrimPrefix(m.topic, "locky/up/")
		backend.Await(topic, func(p []byte) bool { return bytes.Equal(p, m.payload) })
	}
}

// queuedMessage is an outbox message as stored.
type queuedMessage struct {
	topic   string
	payload []byte
}

// stepOutboxClock edits a stopped gateway's database as an adversary would:
// it moves the wall-clock time of every outbox message by d, keeping the
// booked outbox size right, and returns the messages in order.
func stepOutboxClock(t testing.TB, path string, d time.Duration) []queuedMessage {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("open the stopped gateway's database: %v", err)
	}
	defer db.Close()
	var out []queuedMessage
	err = db.Update(func(tx *bolt.Tx) error {
		b, meta := tx.Bucket([]byte("outbox")), tx.Bucket([]byte("meta"))
		var keys, vals [][]byte
		var grown int64
		err := b.ForEach(func(k, v []byte) error {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			var at time.Time
			if err := json.Unmarshal(m["at"], &at); err != nil {
				return fmt.Errorf("message %x: at: %w", k, err)
			}
			var topic string
			if err := json.Unmarshal(m["topic"], &topic); err != nil {
				return fmt.Errorf("message %x: topic: %w", k, err)
			}
			out = append(out, queuedMessage{topic: topic, payload: append([]byte(nil), m["payload"]...)})
			raw, err := json.Marshal(at.Add(d))
			if err != nil {
				return err
			}
			m["at"] = raw
			nv, err := json.Marshal(m)
			if err != nil {
				return err
			}
			grown += int64(len(nv) - len(v))
			keys, vals = append(keys, append([]byte(nil), k...)), append(vals, nv)
			return nil
		})
		if err != nil {
			return err
		}
		for i := range keys {
			if err := b.Put(keys[i], vals[i]); err != nil {
				return err
			}
		}
		booked := int64(binary.BigEndian.Uint64(meta.Get([]byte("outbox_bytes"))))
		return meta.Put([]byte("outbox_bytes"), binary.BigEndian.AppendUint64(nil, uint64(booked+grown)))
	})
	if err != nil {
		t.Fatalf("step the outbox clock: %v", err)
	}
	return out
}

// metricLine returns the value of one series on the gateway's /metrics.
func metricLine(t testing.TB, addr, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return ""
}
