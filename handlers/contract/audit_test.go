package contract_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
)

func TestDecodeAudit(t *testing.T) {
	ok := func(payload string, want contract.AuditRequest) {
		t.Helper()
		got, err := contract.DecodeAudit([]byte(payload))
		if err != nil || got != want {
			t.Errorf("DecodeAudit(%q): got %+v, %v; want %+v, nil", payload, got, err, want)
		}
	}
	ok(`{"msg_id":"m-9","after":0,"limit":200}`, contract.AuditRequest{MsgID: "m-9", Limit: 200})
	ok(`{"msg_id":"m-9"}`, contract.AuditRequest{MsgID: "m-9", Limit: contract.AuditLimitDefault})
	ok(`{"msg_id":"m-9","after":41,"limit":0}`, contract.AuditRequest{MsgID: "m-9", After: 41, Limit: contract.AuditLimitDefault})
	ok(`{"msg_id":"m-9","after":18446744073709551615,"limit":500}`, contract.AuditRequest{MsgID: "m-9", After: 1<<64 - 1, Limit: 500})

	f := func(payload, want string) {
		t.Helper()
		_, err := contract.DecodeAudit([]byte(payload))
		checkBad(t, "DecodeAudit("+payload+")", err, want)
	}
	f(``, "payload is empty")
	f(`{}`, "msg_id is missing")
	f(`[]`, "the payload must be a JSON object, not array")
	f(`{"msg_id":"m-9","limit":501}`, "limit must be 1..500, or absent for 200, not 501")
	f(`{"msg_id":"m-9","limit":-1}`, "limit must be 1..500, or absent for 200, not -1")
	f(`{"msg_id":"m-9","after":-1}`, `field "after" must be uint64, not number -1`)
	f(`{"msg_id":"m-9","after":"3"}`, `field "after" must be uint64, not string`)
	f(`{"msg_id":"m-9","after":1.5}`, `field "after" must be uint64, not number 1.5`)
	f(`{"msg_id":"m-9","before":3}`, `unknown field "before"`)
	f(`{"msg_id":"m-9"}}`, "data after the object")
	f(`{"msg_id":"m-9","after":3,"after":0}`, `duplicate key "after" in the audit request`)
	f(`{"msg_id":"m-9","Limit":1}`, `key "Limit" in the audit request must be spelled "limit"`)
	f(`{"msg_id":"`+strings.Repeat("m", 129)+`"}`, "msg_id is longer than 128 bytes")
}

func FuzzDecodeAudit(f *testing.F) {
	for _, p := range []string{
		`{"msg_id":"m-9","after":0,"limit":200}`,
		`{"msg_id":"m-9"}`,
		`{"msg_id":"m-9","after":18446744073709551615,"limit":500}`,
		`{"msg_id":"m-9","limit":501}`,
		`{"msg_id":"m-9","after":-1}`,
		`{"msg_id":"m-9","after":1e3}`,
		`{"msg_id":"m-9","after":3,"after":0}`,
		`{"msg_id":"m-9","AFTER":3}`,
		``,
		`null`,
	} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		a, err := contract.DecodeAudit(payload)
		if err != nil {
			checkRejected(t, err)
			return
		}
		if a.MsgID == "" || a.Limit < 1 || a.Limit > contract.AuditLimitMax {
			t.Fatalf("accepted %q as %+v", payload, a)
		}
		checkKeysOf(t, payload, snakeCase)
		if got := contract.MsgIDOf(payload); got != a.MsgID {
			t.Fatalf("MsgIDOf(%q): got %q; want %q", payload, got, a.MsgID)
		}
		b, ok := reencode(t, a)
		if !ok {
			return
		}
		a2, err := contract.DecodeAudit(b)
		if err != nil || !reflect.DeepEqual(a, a2) {
			t.Fatalf("decoded %q as %+v; re-encoded %q: got %+v, %v", payload, a, b, a2, err)
		}
	})
}
