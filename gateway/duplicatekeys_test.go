package gateway_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// A back-end and a locker must never disagree on a code: a parser that keeps
// the first of two equal keys would read 222222 here, encoding/json the last.
func TestDuplicatedKeysAreRefusedAndNothingIsStored(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	before := state(t, g)

	f := func(msgID, payload, want string) {
		t.Helper()
		c.Publish(contract.TopicDownPrefix+contract.EntityReservations, payload)
		if a := c.Ack(msgID); a.OK || !strings.Contains(a.Error, want) {
			t.Fatalf("%s: ack %+v; want ok:false with an error containing %q", msgID, a, want)
		}
	}
	f("dup-1", `{"msg_id":"dup-1","op":"upsert","reservation":{"id":"R1","version":1,"door":1,"status":"arriving",`+
		`"deposit_code":"111111","pickup_code":"222222","courier_code":"333333","pickup_code":"444444"}}`,
		`duplicate key "pickup_code" in reservation`)
	f("dup-2", `{"msg_id":"dup-2","op":"upsert","reservation":{"id":"R1","version":1,"door":1,"status":"arriving",`+
		`"deposit_code":"111111","pickup_code":"222222","courier_code":"333333","Pickup_Code":"444444"}}`,
		`key "Pickup_Code" in reservation must be spelled "pickup_code"`)
	if r, err := g.Store().Reservation("R1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reservation R1: got %+v, %v; want none stored", r, err)
	}
	if s := state(t, g); s != before {
		t.Fatalf("state changed by a refused message:\nbefore %s\nafter  %s", before, s)
	}
	for i, code := range []string{"111111", "222222", "444444"} {
		id := "k" + string(rune('1'+i))
		c.Code(code, id)
		c.Display(id, contract.ResultInvalidCode)
	}

	// The screen's code request is refused the same way, as bad_request.
	c.Publish(contract.TopicScreenCode, `{"code":"111111","request_id":"s1","code":"222222"}`)
	if d := c.Display("s1", contract.ResultBadRequest); !strings.Contains(d.Message, `duplicate key "code" in the code request`) {
		t.Fatalf("display %+v; want a message naming the duplicate key", d)
	}
}
