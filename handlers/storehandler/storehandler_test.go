package storehandler

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/store/storetest"
)

// fullDisk is a real store whose commits fail with ENOSPC while full is set.
type fullDisk struct {
	*store.Store
	mu   sync.Mutex
	full bool
	// ackFits lets an ack alone commit while full: a small commit that fits
	// in the pages the database has free.
	ackFits bool
}

func (f *fullDisk) set(full, ackFits bool) {
	f.mu.Lock()
	f.full, f.ackFits = full, ackFits
	f.mu.Unlock()
}

func (f *fullDisk) fail(ack bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.full && !(ack && f.ackFits) {
		return fmt.Errorf("write locky.db: %w", syscall.ENOSPC)
	}
	return nil
}

func (f *fullDisk) UpsertReservation(now time.Time, msgID string, r contract.Reservation, grace time.Duration) ([]store.Message, error) {
	if err := f.fail(false); err != nil {
		return nil, err
	}
	return f.Store.UpsertReservation(now, msgID, r, grace)
}

func (f *fullDisk) Ack(now time.Time, msgID string, err error) ([]store.Message, error) {
	if ferr := f.fail(true); ferr != nil {
		return nil, ferr
	}
	return f.Store.Ack(now, msgID, err)
}

// handlers takes the one subscription of the handler, as the broker's Handle
// does, and delivers to it as the broker's Deliver does.
type handlers struct {
	filter string
	fn     func(contract.Message) error
}

func (b *handlers) Handle(filter string, fn func(contract.Message) error) error {
	b.filter, b.fn = filter, fn
	return nil
}

func (b *handlers) deliver(topic, payload string) error {
	if b.filter != contract.TopicDownPrefix+"#" {
		return fmt.Errorf("the handler subscribed to %q; want %q", b.filter, contract.TopicDownPrefix+"#")
	}
	return b.fn(contract.Message{Topic: topic, Payload: []byte(payload)})
}

func acks(t *testing.T, st *store.Store) map[string]contract.Ack {
	t.Helper()
	msgs, err := st.OutboxAfter(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]contract.Ack{}
	for _, m := range msgs {
		if m.Topic == contract.TopicAcks {
			var a contract.Ack
			if err := json.Unmarshal(m.Payload, &a); err != nil {
				t.Fatal(err)
			}
			if _, dup := out[a.MsgID]; dup {
				t.Fatalf("two acks for %s", a.MsgID)
			}
			out[a.MsgID] = a
		}
	}
	return out
}

func TestEveryMessageIsAckedOnAFullDisk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "db")
		st := storetest.Open(t, store.Config{Path: path, CodeKey: make([]byte, 32)})
		if _, err := st.EnsureDoors(2, "M"); err != nil {
			t.Fatal(err)
		}
		fd := &fullDisk{Store: st}
		b := &handlers{}
		h, err := New(Config{Store: fd, Broker: b, Logger: testenv.QuietLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		upsert := func(msgID, id string, door int) {
			t.Helper()
			p := fmt.Sprintf(`{"msg_id":%q,"op":"upsert","reservation":{"id":%q,"version":1,"door":%d,"deposit_code":"1000%d","pickup_code":"2000%d","courier_code":"3000%d"}}`,
				msgID, id, door, door, door, door)
			if err := b.deliver(contract.TopicDownPrefix+"reservations", p); err != nil {
				t.Fatalf("Handle %s: %v; want it answered", msgID, err)
			}
		}
		fd.set(true, true)
		upsert("m-1", "R1", 1) // the ack with the error fits: at once
		if a, ok := acks(t, st)["m-1"]; !ok || a.OK || !strings.Contains(a.Error, "storage is full") {
			t.Fatalf("ack of m-1 %+v (%v); want at once, ok:false, saying the storage is full", a, ok)
		}
		fd.set(true, false)
		upsert("m-2", "R2", 2) // not even the ack fits: held
		if _, ok := acks(t, st)["m-2"]; ok {
			t.Fatal("m-2 acked while nothing commits")
		}
		if hl := st.Health(); hl.Pending != 1 {
			t.Fatalf("health %+v; want the ack held", hl)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		fd.set(false, false)
		time.Sleep(5 * time.Second) // the longest back-off
		synctest.Wait()
		a, ok := acks(t, st)["m-2"]
		if !ok || a.OK || !strings.Contains(a.Error, "send it again") {
			t.Fatalf("ack of m-2 %+v (%v) once space returned; want ok:false saying to send it again", a, ok)
		}
		if r, err := st.Reservation("R2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("R2 %+v %v; want nothing of the refused message stored", r, err)
		}
		if hl := st.Health(); hl.Degraded {
			t.Fatalf("health %+v once the ack committed; want not degraded", hl)
		}
		upsert("m-3", "R2", 2) // sent again
		if a := acks(t, st)["m-3"]; !a.OK {
			t.Fatalf("ack of m-3 %+v; want ok", a)
		}
	})
}
