package gateway_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

// auditReply asks the locker for its audit trail after seq after on
// locky/down/audit and returns its reply on locky/up/audit, which comes
// with an ok ack.
func auditReply(t *testing.T, c *gatewaytest.Client, msgID string, after uint64) contract.AuditReply {
	t.Helper()
	c.Publish(contract.TopicDownAudit, contract.AuditRequest{MsgID: msgID, After: after, Limit: 200})
	m := c.Await(contract.TopicAudit, func(p []byte) bool {
		var r contract.AuditReply
		return json.Unmarshal(p, &r) == nil && r.MsgID == msgID
	})
	if a := c.Ack(msgID); !a.OK {
		t.Fatalf("%s: ack %+v; want ok", msgID, a)
	}
	var r contract.AuditReply
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatalf("%s: reply %s: %v", msgID, m.Payload, err)
	}
	return r
}

// TestAuditTrailThroughTheBackEnd asks a locker for its audit trail as the
// back-end does (the bridge maps lockers/{id}/down/audit to this topic),
// before and after someone edited a record while the locker was stopped.
func TestAuditTrailThroughTheBackEnd(t *testing.T) {
	cfg := testConfig(t)
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 1, 3, "300001", "300002", "300003"))
	c.Code("300001", "r-1")
	c.Display("r-1", contract.ResultOpened)
	g.SimDoor(t, 3, "close")
	c.Event(contract.EventStored, "R1", 3)
	c.Code("300002", "r-2")
	c.Display("r-2", contract.ResultOpened)

	r := auditReply(t, c, "a-1", 0)
	if !r.Verified || r.Break != "" || r.More || r.Next != 2 || len(r.Records) != 2 {
		t.Fatalf("got %+v; want the 2 openings, verified", r)
	}
	record := func(seq int, want contract.AuditRecord) {
		t.Helper()
		got := r.Records[seq-1]
		if got.At.IsZero() {
			t.Errorf("record %d has no time", got.Seq)
		}
		got.At = want.At
		if got != want {
			t.Errorf("record %d: got %+v; want %+v", seq, got, want)
		}
	}
	record(1, contract.AuditRecord{Seq: 1, Door: 3, Reservation: "R1", Kind: contract.KindDeposit, Result: contract.ResultOpened, RequestID: "r-1", Sealed: true})
	record(2, contract.AuditRecord{Seq: 2, Door: 3, Reservation: "R1", Kind: contract.KindPickup, Result: contract.ResultOpened, RequestID: "r-2", Sealed: true})
	// The next page is empty; asking changed nothing in the trail.
	if r := auditReply(t, c, "a-2", r.Next); len(r.Records) != 0 || r.More || r.Next != 2 || r.Trail.Records != 2 || r.Trail.HeadSeq != 2 {
		t.Fatalf("after record 2: got %+v; want no record and the trail as it was", r)
	}

	// Requests that are not understood get one ack naming the problem and
	// no reply.
	refused := func(msgID, payload, want string) {
		t.Helper()
		c.Publish(contract.TopicDownAudit, payload)
		if a := c.Ack(msgID); a.OK || !strings.Contains(a.Error, want) {
			t.Errorf("%s: ack %+v; want ok:false naming %q", payload, a, want)
		}
	}
	refused("b-1", `{"msg_id":"b-1","limit":1000}`, "limit must be 1..500")
	refused("b-2", `{"msg_id":"b-2","after":0,"after":5}`, `duplicate key "after" in the audit request`)
	refused("b-3", `{"msg_id":"b-3","After":5}`, `key "After" in the audit request must be spelled "after"`)
	refused("b-4", `{"msg_id":"b-4","after":"latest"}`, `field "after" must be uint64, not string`)
	refused("", `{"after":1`, "malformed JSON")
	auditReply(t, c, "a-3", 2) // committed after the bad ones' acks: any reply to them came before
	for _, m := range c.Received() {
		if m.Topic == contract.TopicAudit && bytes.Contains(m.Payload, []byte(`"msg_id":"b-`)) {
			t.Errorf("a bad request got a reply: %s", m.Payload)
		}
	}

	// Someone with the SD card edits the deposit while the locker is stopped.
	g.Stop(t)
	db, err := bolt.Open(filepath.Join(cfg.DataDir, "locky.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, k := tx.Bucket([]byte("audit")), binary.BigEndian.AppendUint64(nil, 1)
		v := b.Get(k)
		if !bytes.Contains(v, []byte(`"door":3`)) {
			return fmt.Errorf("record 1 is not door 3's opening: %s", v)
		}
		return b.Put(k, bytes.Replace(v, []byte(`"door":3`), []byte(`"door":4`), 1))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	g = startGateway(t, cfg)
	c = connect(t, g.MQTTAddr(), "locky/#")
	// Whatever page is asked for, the verification is the whole trail's.
	broken := func(after uint64) {
		t.Helper()
		r := auditReply(t, c, fmt.Sprintf("a-after-%d", after), after)
		if r.Verified || r.BreakSeq != 1 || !strings.Contains(r.Break, "audit record 1 was altered") {
			t.Errorf("after %d: got verified %v, break %d %q; want a break naming record 1", after, r.Verified, r.BreakSeq, r.Break)
		}
		if after == 0 && (len(r.Records) != 2 || r.Records[0].Door != 4) {
			t.Errorf("got records %+v; want both, record 1 as it now reads (door 4)", r.Records)
		}
	}
	broken(0)
	broken(1)
}
