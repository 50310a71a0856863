package contract_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
)

func TestDuplicateKeysAreRefused(t *testing.T) {
	type decoder func([]byte) error
	down := func(entity string) decoder {
		return func(p []byte) error { _, err := contract.DecodeDown(entity, p); return err }
	}
	var (
		reservations = down("reservations")
		doors        = down("doors")
		command      = func(p []byte) error { _, err := contract.DecodeCommand(p); return err }
		syncReq      = func(p []byte) error { _, err := contract.DecodeSync(p); return err }
		audit        = func(p []byte) error { _, err := contract.DecodeAudit(p); return err }
		code         = func(p []byte) error { _, err := contract.DecodeCodeRequest(p); return err }
		doorState    = func(p []byte) error { _, err := contract.DecodeDoorState(p); return err }
		doorCommand  = func(p []byte) error { _, err := contract.DecodeDoorCommand(p); return err }
	)
	f := func(dec decoder, payload, want string) {
		t.Helper()
		checkBad(t, payload, dec([]byte(payload)), want)
	}
	res := func(obj string) string { return `{"msg_id":"m-1","op":"upsert","reservation":` + obj + `}` }
	dupPickup := strings.TrimSuffix(validReservation, "}") + `,"pickup_code":"999999"}`

	// Exact duplicates, at the top and nested, however the key is escaped.
	f(reservations, res(dupPickup), `duplicate key "pickup_code" in reservation`)
	f(reservations, res(strings.TrimSuffix(validReservation, "}")+`,"pick\u0075p_code":"999999"}`), `duplicate key "pickup_code" in reservation`)
	f(reservations, res(strings.TrimSuffix(reservation("deposit_code", "", "deposit_hash", `"`+hashA+`"`), "}")+`,"deposit_hash":"`+hashB+`"}`), `duplicate key "deposit_hash" in reservation`)
	f(reservations, `{"msg_id":"m-1","msg_id":"m-2","op":"upsert","reservation":`+validReservation+`}`, `duplicate key "msg_id" in the message`)
	f(reservations, `{"msg_id":"m-1","op":"upsert","op":"delete","reservation":`+validReservation+`}`, `duplicate key "op" in the message`)
	f(reservations, `{"msg_id":"m-1","op":"upsert","reservation":`+validReservation+`,"reservation":`+validReservation+`}`, `duplicate key "reservation" in the message`)
	f(doors, `{"msg_id":"m-1","op":"upsert","door":{"id":7,"id":8}}`, `duplicate key "id" in door`)
	f(doors, `{"msg_id":"m-1","op":"upsert","door":{"id":7,"disabled":false,"disabled":true}}`, `duplicate key "disabled" in door`)
	// A strict decoder refuses unknown keys itself; a door state ignores
	// them, but not their duplicates: at any depth, in arrays, the empty key,
	// past the first few keys of an object.
	f(reservations, res(strings.TrimSuffix(validReservation, "}")+`,"note":1,"note":2}`), `unknown field "note"`)
	f(doorState, `{"state":"open","note":1,"note":2}`, `duplicate key "note" in the door state`)
	f(doorState, `{"state":"open","board":{"a":{"b":1,"b":2}}}`, `duplicate key "b" in board.a`)
	f(doorState, `{"state":"open","x":[{"a":1},{"b":1,"b":2}]}`, `duplicate key "b" in x[1]`)
	f(doorState, `{"state":"open","x":[[],[{"a":1,"a":1}]]}`, `duplicate key "a" in x[1][0]`)
	f(doorState, `{"state":"open","":1,"":2}`, `duplicate key "" in the door state`)
	var many strings.Builder
	many.WriteString(`{"state":"open"`)
	for i := range 40 {
		fmt.Fprintf(&many, `,"k%d":%d`, i, i)
	}
	f(doorState, many.String()+`,"k3":3}`, `duplicate key "k3" in the door state`)
	f(doorState, many.String()+`,"k39":3}`, `duplicate key "k39" in the door state`)
	f(doorState, `{"state":"open","x":`+strings.Repeat("[", 32)+strings.Repeat("]", 32)+`}`, "nested deeper than 32 levels")

	// Keys are case-sensitive: what encoding/json would match to a field
	// case-insensitively (Unicode folding included) is refused.
	f(reservations, res(strings.TrimSuffix(validReservation, "}")+`,"Pickup_Code":"999999"}`), `key "Pickup_Code" in reservation must be spelled "pickup_code"`)
	f(reservations, res(strings.TrimSuffix(reservation("pickup_code", ""), "}")+`,"PICKUP_CODE":"654321"}`), `key "PICKUP_CODE" in reservation must be spelled "pickup_code"`)
	f(reservations, res(strings.TrimSuffix(reservation("pickup_code", ""), "}")+`,"pic\u212aup_code":"654321"}`), "in reservation must be spelled \"pickup_code\"")
	f(reservations, res(strings.TrimSuffix(reservation("status", ""), "}")+`,"\u017ftatus":"arriving"}`), `must be spelled "status"`)
	f(reservations, `{"MSG_ID":"m-1","op":"upsert","reservation":`+validReservation+`}`, `key "MSG_ID" in the message must be spelled "msg_id"`)
	f(reservations, `{"msg_id":"m-1","op":"upsert","Reservation":`+validReservation+`}`, `key "Reservation" in the message must be spelled "reservation"`)
	f(down("users"), `{"MSG_ID":"m","OP":"delete","User":{"ID":"u"}}`, `must be spelled "msg_id"`)

	// The other decoders.
	f(command, `{"msg_id":"m-9","command":"open_door","door":7,"door":8,"reason":"x"}`, `duplicate key "door" in the command`)
	f(command, `{"msg_id":"m-9","command":"open_door","Door":7,"reason":"x"}`, `key "Door" in the command must be spelled "door"`)
	f(syncReq, `{"msg_id":"m-2","msg_id":"m-3"}`, `duplicate key "msg_id" in the sync request`)
	f(audit, `{"msg_id":"m-9","after":0,"limit":5,"limit":500}`, `duplicate key "limit" in the audit request`)
	f(audit, `{"msg_id":"m-9","After":7}`, `key "After" in the audit request must be spelled "after"`)
	f(code, `{"code":"482913","code":"000000","request_id":"r1"}`, `duplicate key "code" in the code request`)
	f(code, `{"code":"482913","request_id":"r1","request_id":"r2"}`, `duplicate key "request_id" in the code request`)
	f(code, `{"CODE":"482913","request_id":"r1"}`, `key "CODE" in the code request must be spelled "code"`)
	f(doorState, `{"state":"open","state":"closed"}`, `duplicate key "state" in the door state`)
	f(doorState, `{"state":"open","State":"closed"}`, `key "State" in the door state must be spelled "state"`)
	f(doorState, `{"state":"open","board":{"fw":"1","fw":"2"}}`, `duplicate key "fw" in board`)
	f(doorCommand, `{"action":"open","action":"open"}`, `duplicate key "action" in the door command`)
	f(doorCommand, `{"Action":"open"}`, `key "Action" in the door command must be spelled "action"`)
}

func TestSameKeyInDifferentObjectsIsAccepted(t *testing.T) {
	got, err := contract.DecodeDoorState([]byte(`{"state":"open","board":{"state":"ok","State":"OK","at":1},"sensors":[{"id":1},{"id":2}]}`))
	if want := (contract.DoorState{State: "open"}); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, %v; want %+v (a door state's unknown keys are ignored)", got, err, want)
	}
	var many strings.Builder
	many.WriteString(`{"state":"closed"`)
	for i := range 40 {
		fmt.Fprintf(&many, `,"k%d":{"k%d":%d}`, i, i, i)
	}
	if _, err := contract.DecodeDoorState([]byte(many.String() + "}")); err != nil {
		t.Fatalf("got %v; want 40 distinct keys accepted", err)
	}
	deep := `{"state":"open","x":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`
	if _, err := contract.DecodeDoorState([]byte(deep)); err != nil {
		t.Fatalf("got %v; want 32 levels of nesting accepted", err)
	}
	if _, err := contract.DecodeDown("doors", []byte(`{"msg_id":"m-1","op":"upsert","door":{"id":7,"partner":"acme"}}`)); err != nil {
		t.Fatalf("got %v; want a door accepted", err)
	}
}

func TestIDsOfAmbiguousPayloads(t *testing.T) {
	f := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	}
	// Which of two msg_ids was meant is not for the locker to guess: the ack
	// goes out with "" (SPEC §4: a message too broken to carry a msg_id).
	f(contract.MsgIDOf([]byte(`{"msg_id":"m-1","msg_id":"m-2","op":"upsert"}`)), "")
	f(contract.MsgIDOf([]byte(`{"MSG_ID":"m-1","op":"upsert"}`)), "")
	f(contract.MsgIDOf([]byte(`{"msg_id":"m-1","MSG_ID":"m-2"}`)), "m-1")
	f(contract.MsgIDOf([]byte(`{"msg_id":"m-1","reservation":{"pickup_code":"1","pickup_code":"2"}}`)), "m-1")
	f(contract.MsgIDOf([]byte(`{"reservation":{"msg_id":"m-1"}}`)), "")
	f(contract.MsgIDOf([]byte(`{"msg_id":"m-1"} {}`)), "")
	f(contract.MsgIDOf([]byte(`{"msg_id":"m-1"}}`)), "")
	f(contract.MsgIDOf([]byte(" {\"msg_id\":\"m-1\"}\n")), "m-1")
	f(contract.RequestIDOf([]byte(`{"code":"1","request_id":"r1","request_id":"r2"}`)), "")
	f(contract.RequestIDOf([]byte(`{"code":"1","Request_ID":"r1"}`)), "")
}
