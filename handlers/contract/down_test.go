package contract_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// A valid reservation object as SPEC §4 shows it.
const (
	validReservation = `{"id":"R12","version":3,"door":7,"partner":"acme","user":"system",` +
		`"status":"arriving","expires_at":"2026-12-01T00:00:00Z",` +
		`"deposit_code":"123456","pickup_code":"654321","courier_code":"777000"}`
	hashA = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
	hashB = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
)

// down wraps an entity object in a downstream message.
func down(op, field, obj string) string {
	return `{"msg_id":"m-1","op":"` + op + `","` + field + `":` + obj + `}`
}

// reservation returns validReservation with fields replaced: each pair is a
// JSON key and its raw value; an empty value removes the key.
func reservation(pairs ...string) string {
	fields := []string{
		`"id":"R12"`, `"version":3`, `"door":7`, `"partner":"acme"`, `"user":"system"`,
		`"status":"arriving"`, `"expires_at":"2026-12-01T00:00:00Z"`,
		`"deposit_code":"123456"`, `"pickup_code":"654321"`, `"courier_code":"777000"`,
	}
	for i := 0; i < len(pairs); i += 2 {
		key, val := `"`+pairs[i]+`":`, pairs[i+1]
		found := false
		for j, f := range fields {
			if strings.HasPrefix(f, key) {
				fields[j], found = key+val, true
				if val == "" {
					fields[j] = ""
				}
			}
		}
		if !found && val != "" {
			fields = append(fields, key+val)
		}
	}
	var kept []string
	for _, f := range fields {
		if f != "" {
			kept = append(kept, f)
		}
	}
	return "{" + strings.Join(kept, ",") + "}"
}

// checkBad fails unless err is a payload error whose text contains want.
func checkBad(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: got no error; want one containing %q", what, want)
		return
	}
	if !errors.Is(err, contract.ErrBadPayload) {
		t.Errorf("%s: got %q; want an error wrapping ErrBadPayload", what, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: got %q; want it to contain %q", what, err, want)
	}
}

func TestReservationHelper(t *testing.T) {
	if got := reservation(); got != validReservation {
		t.Fatalf("got %q; want %q", got, validReservation)
	}
}

func TestDecodeDownAccepts(t *testing.T) {
	exp := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f := func(entity, payload string, want contract.DownMessage) {
		t.Helper()
		got, err := contract.DecodeDown(entity, []byte(payload))
		if err != nil {
			t.Errorf("DecodeDown(%q, %q): unexpected error: %v", entity, payload, err)
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("DecodeDown(%q, %q):\ngot  %+v\nwant %+v", entity, payload, got, want)
		}
	}
	full := contract.Reservation{ID: "R12", Version: 3, Door: 7, Partner: "acme", User: "system",
		Status: "arriving", ExpiresAt: &exp, DepositCode: "123456", PickupCode: "654321", CourierCode: "777000"}
	f("reservations", down("upsert", "reservation", validReservation),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Reservation: &full})

	hashed := contract.Reservation{ID: "R12", Version: 3, Door: 7, DepositHash: hashA, PickupHash: hashB,
		CourierCode: "777000"}
	f("reservations", down("upsert", "reservation", reservation("partner", "", "user", "", "status", "",
		"expires_at", "", "deposit_code", "", "pickup_code", "", "deposit_hash", `"`+hashA+`"`, "pickup_hash", `"`+hashB+`"`)),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Reservation: &hashed})

	upper := hashed
	upper.DepositHash = strings.ToUpper(hashA)
	f("reservations", down("upsert", "reservation", reservation("partner", "", "user", "", "status", "",
		"expires_at", "", "deposit_code", "", "pickup_code", "", "deposit_hash", `"`+strings.ToUpper(hashA)+`"`, "pickup_hash", `"`+hashB+`"`)),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Reservation: &upper})

	for _, st := range []string{"arriving", "stored", "delivered", "returned", "cancelled"} {
		r := full
		r.Status = st
		f("reservations", down("upsert", "reservation", reservation("status", `"`+st+`"`)),
			contract.DownMessage{MsgID: "m-1", Op: "upsert", Reservation: &r})
	}
	shortest, longest := full, full
	shortest.DepositCode, longest.DepositCode = "0000", "999999999999"
	f("reservations", down("upsert", "reservation", reservation("deposit_code", `"0000"`)),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Reservation: &shortest})
	f("reservations", down("upsert", "reservation", reservation("deposit_code", `"999999999999"`)),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Reservation: &longest})
	edge := full
	edge.Door = contract.MaxDoor
	f("reservations", down("upsert", "reservation", reservation("door", "9999")),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Reservation: &edge})

	// A delete needs only the id.
	f("reservations", down("delete", "reservation", `{"id":"R12"}`),
		contract.DownMessage{MsgID: "m-1", Op: "delete", Reservation: &contract.Reservation{ID: "R12"}})

	f("doors", down("upsert", "door", `{"id":7,"size":"M","partner":"acme","disabled":true}`),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Door: &contract.Door{ID: 7, Size: "M", Partner: "acme", Disabled: true}})
	f("doors", down("delete", "door", `{"id":9999}`),
		contract.DownMessage{MsgID: "m-1", Op: "delete", Door: &contract.Door{ID: 9999}})
	f("partners", down("upsert", "partner", `{"id":"acme","name":"Acme & Co <retail>"}`),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", Partner: &contract.Partner{ID: "acme", Name: "Acme & Co <retail>"}})
	f("users", down("upsert", "user", `{"id":"u1","name":"Zoë","role":"courier"}`),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", User: &contract.User{ID: "u1", Name: "Zoë", Role: "courier"}})

	// Whitespace around the object is not trailing data; exactly 64 KiB is allowed.
	padded := " \n\t" + down("upsert", "user", `{"id":"u1"}`) + "\r\n "
	f("users", padded, contract.DownMessage{MsgID: "m-1", Op: "upsert", User: &contract.User{ID: "u1"}})
	p := down("upsert", "user", `{"id":"u1"}`)
	f("users", p+strings.Repeat(" ", contract.MaxPayload-len(p)),
		contract.DownMessage{MsgID: "m-1", Op: "upsert", User: &contract.User{ID: "u1"}})
}

func TestDecodeDownRejects(t *testing.T) {
	f := func(entity, payload, want string) {
		t.Helper()
		_, err := contract.DecodeDown(entity, []byte(payload))
		checkBad(t, "DecodeDown("+entity+", "+payload+")", err, want)
	}
	res := func(pairs ...string) string { return down("upsert", "reservation", reservation(pairs...)) }

	// Raw payload checks.
	f("reservations", "", "payload is empty")
	f("reservations", " \n\t ", "payload is empty")
	f("reservations", "{\"msg_id\":\"m-\xff\",\"op\":\"delete\",\"reservation\":{\"id\":\"R1\"}}", "not UTF-8")
	big := down("upsert", "user", `{"id":"u1"}`)
	f("users", big+strings.Repeat(" ", contract.MaxPayload-len(big)+1), "the limit is 65536")

	// Malformed JSON, wrong types, unknown fields, trailing data.
	f("reservations", `{"msg_id":"m-1",`, "malformed JSON")
	f("reservations", `{"msg_id":"m-1" "op":"upsert"}`, "malformed JSON")
	f("reservations", `not json`, "malformed JSON")
	f("reservations", `[]`, "must be a JSON object, not array")
	f("reservations", `"upsert"`, "must be a JSON object, not string")
	f("reservations", `{"msg_id":1,"op":"delete","reservation":{"id":"R1"}}`, `field "msg_id" must be string, not number`)
	f("reservations", `{"msg_id":"m-1","op":true,"reservation":{"id":"R1"}}`, `field "op" must be string, not bool`)
	f("reservations", res("version", `"3"`), `"reservation.version" must be uint64, not string`)
	f("reservations", res("version", `-1`), `"reservation.version" must be uint64`)
	f("reservations", res("version", `1.5`), `"reservation.version" must be uint64`)
	f("reservations", res("door", `"7"`), `"reservation.door" must be int, not string`)
	f("reservations", res("expires_at", `"tomorrow"`), "malformed JSON")
	f("reservations", res("expires_at", `"2026-12-01"`), "malformed JSON")
	f("reservations", res("colour", `"red"`), `unknown field "colour"`)
	f("reservations", `{"msg_id":"m-1","op":"upsert","reservation":`+validReservation+`,"priority":1}`, `unknown field "priority"`)
	f("reservations", res()+" x", "data after the object")
	f("reservations", res()+"}", "data after the object")
	f("reservations", res()+"]", "data after the object")
	f("reservations", res()+res(), "data after the object")
	f("reservations", res()+"\n{}", "data after the object")

	// msg_id and op.
	f("reservations", `{"op":"upsert","reservation":`+validReservation+`}`, "msg_id is missing")
	f("reservations", `{"msg_id":"","op":"upsert","reservation":`+validReservation+`}`, "msg_id is missing")
	f("reservations", `{"msg_id":"`+strings.Repeat("m", 129)+`","op":"upsert","reservation":`+validReservation+`}`, "msg_id is longer than 128 bytes")
	f("reservations", down("put", "reservation", validReservation), `op "put" is unknown; use "upsert" or "delete"`)
	f("reservations", down("UPSERT", "reservation", validReservation), `op "UPSERT" is unknown`)
	f("reservations", `{"msg_id":"m-1","reservation":`+validReservation+`}`, `op "" is unknown`)

	// The entity object.
	f("reservations", `{"msg_id":"m-1","op":"upsert"}`, `exactly one "reservation" object`)
	f("reservations", `{"msg_id":"m-1","op":"upsert","reservation":null}`, `exactly one "reservation" object`)
	f("reservations", `{"msg_id":"m-1","op":"upsert","reservation":`+validReservation+`,"door":{"id":7}}`, `exactly one "reservation" object`)
	f("reservations", down("upsert", "door", `{"id":7}`), `field "reservation" is missing`)
	f("doors", down("upsert", "reservation", validReservation), `field "door" is missing`)
	f("partners", down("upsert", "user", `{"id":"u1"}`), `field "partner" is missing`)
	f("users", down("upsert", "partner", `{"id":"acme"}`), `field "user" is missing`)
	f("parcels", down("upsert", "reservation", validReservation), `entity "parcels" is unknown`)

	// Reservation fields.
	f("reservations", res("id", `""`), "reservation id is missing")
	f("reservations", res("id", ""), "reservation id is missing")
	f("reservations", res("id", `"R\n12"`), "reservation id contains a control character")
	f("reservations", res("id", `"`+strings.Repeat("R", 129)+`"`), "reservation id is longer than 128 bytes")
	f("reservations", down("delete", "reservation", `{}`), "reservation id is missing")
	f("reservations", res("version", "0"), "reservation R12: version must be 1 or more")
	f("reservations", res("version", ""), "reservation R12: version must be 1 or more")
	f("reservations", res("door", "0"), "reservation R12: door must be 1..9999, not 0")
	f("reservations", res("door", ""), "reservation R12: door must be 1..9999, not 0")
	f("reservations", res("door", "-7"), "door must be 1..9999, not -7")
	f("reservations", res("door", "10000"), "door must be 1..9999, not 10000")
	f("reservations", res("status", `"lost"`), `reservation R12: status "lost" is unknown`)
	f("reservations", res("status", `"Stored"`), `status "Stored" is unknown`)
	f("reservations", res("partner", `"ac\u0000me"`), "partner id contains a control character")

	// Codes: missing, both, bad hash, equal, wrong shape.
	for _, kind := range []string{"deposit", "pickup", "courier"} {
		f("reservations", res(kind+"_code", ""), "reservation R12: "+kind+" code is missing (send "+kind+"_code or "+kind+"_hash)")
		f("reservations", res(kind+"_code", `""`), kind+" code is missing")
		f("reservations", res(kind+"_hash", `"`+hashA+`"`), "send "+kind+"_code or "+kind+"_hash, not both")
		for _, h := range []string{"abc", hashA[:63], hashA + "0", hashA[:62] + "zz", hashA[:32], " " + hashA[1:]} {
			f("reservations", res(kind+"_code", "", kind+"_hash", `"`+h+`"`), kind+"_hash must be 64 hex digits (HMAC-SHA256)")
		}
		for _, c := range []string{"123", "1234567890123", "12a456", "12 456", "-12345", "+12345", "１２３４５６", "١٢٣٤٥٦", `1234\u0000`} {
			f("reservations", res(kind+"_code", `"`+c+`"`), "reservation R12: "+kind+" code: bad payload: a code is")
		}
		f("reservations", res(kind+"_code", "123456"), `field "reservation.`+kind+`_code" must be string, not number`)
	}
	f("reservations", res("pickup_code", `"123456"`), "deposit, pickup and courier codes must differ")
	f("reservations", res("courier_code", `"123456"`), "codes must differ")
	f("reservations", res("courier_code", `"654321"`), "codes must differ")
	f("reservations", res("deposit_code", "", "pickup_code", "", "deposit_hash", `"`+hashA+`"`, "pickup_hash", `"`+hashA+`"`), "codes must differ")
	f("reservations", res("deposit_code", "", "courier_code", "", "deposit_hash", `"`+hashA+`"`, "courier_hash", `"`+strings.ToUpper(hashA)+`"`), "codes must differ")

	// Other entities.
	f("doors", down("upsert", "door", `{"id":0}`), "door id must be 1..9999, not 0")
	f("doors", down("upsert", "door", `{}`), "door id must be 1..9999, not 0")
	f("doors", down("upsert", "door", `{"id":10000}`), "door id must be 1..9999, not 10000")
	f("doors", down("upsert", "door", `{"id":"7"}`), `field "door.id" must be int, not string`)
	f("doors", down("upsert", "door", `{"id":7,"size":"`+strings.Repeat("X", 17)+`"}`), "door size is longer than 16 bytes")
	f("doors", down("upsert", "door", `{"id":7,"partner":"a\tb"}`), "partner id contains a control character")
	f("doors", down("upsert", "door", `{"id":7,"disabled":"yes"}`), `field "door.disabled" must be bool, not string`)
	f("doors", down("upsert", "door", `{"id":7,"locked":true}`), `unknown field "locked"`)
	f("partners", down("upsert", "partner", `{"name":"Acme"}`), "partner id is missing")
	f("partners", down("upsert", "partner", `{"id":"`+strings.Repeat("p", 129)+`"}`), "partner id is longer than 128 bytes")
	f("users", down("upsert", "user", `{"name":"Zoë"}`), "user id is missing")
	f("users", down("upsert", "user", `{"id":"u\u007f"}`), "user id contains a control character")
}

func TestDecodeCommand(t *testing.T) {
	got, err := contract.DecodeCommand([]byte(`{"msg_id":"m-9","command":"open_door","door":7,"reason":"ticket 881"}`))
	want := contract.Command{MsgID: "m-9", Command: "open_door", Door: 7, Reason: "ticket 881"}
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v, nil", got, err, want)
	}

	f := func(payload, want string) {
		t.Helper()
		_, err := contract.DecodeCommand([]byte(payload))
		checkBad(t, "DecodeCommand("+payload+")", err, want)
	}
	f(``, "payload is empty")
	f(`{"msg_id":"m-9","command":"open_door","door":7,"reason":"x"`, "malformed JSON")
	f(`{"command":"open_door","door":7,"reason":"x"}`, "msg_id is missing")
	f(`{"msg_id":"m-9","command":"reboot","door":7,"reason":"x"}`, `command "reboot" is unknown; use "open_door"`)
	f(`{"msg_id":"m-9","door":7,"reason":"x"}`, `command "" is unknown`)
	f(`{"msg_id":"m-9","command":"open_door","reason":"x"}`, "door must be 1..9999, not 0")
	f(`{"msg_id":"m-9","command":"open_door","door":10000,"reason":"x"}`, "door must be 1..9999, not 10000")
	f(`{"msg_id":"m-9","command":"open_door","door":"7","reason":"x"}`, `field "door" must be int, not string`)
	f(`{"msg_id":"m-9","command":"open_door","door":7}`, "reason is missing")
	f(`{"msg_id":"m-9","command":"open_door","door":7,"reason":"`+strings.Repeat("r", 513)+`"}`, "reason is longer than 512 bytes")
	f(`{"msg_id":"m-9","command":"open_door","door":7,"reason":"x","by":"me"}`, `unknown field "by"`)
	f(`{"msg_id":"m-9","command":"open_door","door":7,"reason":"x"}}`, "data after the object")
	f("{\"msg_id\":\"m-9\",\"command\":\"open_door\",\"door\":7,\"reason\":\"\xfe\"}", "not UTF-8")
}

func TestDecodeSync(t *testing.T) {
	got, err := contract.DecodeSync([]byte(`{"msg_id":"m-2"}`))
	if err != nil || got.MsgID != "m-2" {
		t.Fatalf("got %+v, %v; want msg_id %q", got, err, "m-2")
	}
	f := func(payload, want string) {
		t.Helper()
		_, err := contract.DecodeSync([]byte(payload))
		checkBad(t, "DecodeSync("+payload+")", err, want)
	}
	f(``, "payload is empty")
	f(`{}`, "msg_id is missing")
	f(`null`, "msg_id is missing")
	f(`{"msg_id":2}`, `field "msg_id" must be string, not number`)
	f(`{"msg_id":"m-2","full":true}`, `unknown field "full"`)
	f(`{"msg_id":"m-2"} {"msg_id":"m-3"}`, "data after the object")
	f(`{"msg_id":"m-2"}}`, "data after the object")
	f(`{"msg_id":"`+strings.Repeat("m", 129)+`"}`, "msg_id is longer than 128 bytes")
}

func TestDecodeCodeRequest(t *testing.T) {
	ok := func(payload string, want contract.CodeRequest) {
		t.Helper()
		got, err := contract.DecodeCodeRequest([]byte(payload))
		if err != nil || got != want {
			t.Errorf("DecodeCodeRequest(%q): got %+v, %v; want %+v, nil", payload, got, err, want)
		}
	}
	ok(`{"code":"482913","request_id":"r1"}`, contract.CodeRequest{Code: "482913", RequestID: "r1"})
	ok(`{"code":"0000"}`, contract.CodeRequest{Code: "0000"})

	f := func(payload, want string) {
		t.Helper()
		_, err := contract.DecodeCodeRequest([]byte(payload))
		checkBad(t, "DecodeCodeRequest("+payload+")", err, want)
	}
	f(``, "payload is empty")
	f(`{"code":"482913"`, "malformed JSON")
	f(`{"request_id":"r1"}`, "code is missing")
	f(`{"code":"","request_id":"r1"}`, "code is missing")
	f(`{"code":482913,"request_id":"r1"}`, `field "code" must be string, not number`)
	f(`{"code":"482913","request_id":1}`, `field "request_id" must be string, not number`)
	f(`{"code":"482913","request_id":"r1","door":7}`, `unknown field "door"`)
	f(`{"code":"482913","request_id":"`+strings.Repeat("r", 129)+`"}`, "request_id is longer than 128 bytes")
	f(`{"code":"123","request_id":"r1"}`, "a code is 4 to 12 digits")
	f(`{"code":"1234567890123","request_id":"r1"}`, "a code is 4 to 12 digits")
	f(`{"code":"48a913","request_id":"r1"}`, "a code is digits only")
	f(`{"code":"482913 ","request_id":"r1"}`, "a code is digits only")
	f(`{"code":"482913","request_id":"r1"}]`, "data after the object")
	f("{\"code\":\"482913\",\"request_id\":\"r\xc0\"}", "not UTF-8")
	f(`{"code":"482913","request_id":"r1"}`+strings.Repeat(" ", contract.MaxPayload), "the limit is 65536")
}

func TestDecodeDoorState(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ok := func(payload string, want contract.DoorState) {
		t.Helper()
		got, err := contract.DecodeDoorState([]byte(payload))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("DecodeDoorState(%q): got %+v, %v; want %+v, nil", payload, got, err, want)
		}
	}
	ok(`{"state":"open"}`, contract.DoorState{State: "open"})
	ok(`{"state":"closed","at":"2026-03-01T12:00:00Z"}`, contract.DoorState{State: "closed", At: at})
	ok(`{"state":"fault","reason":"jammed","at":"2026-03-01T12:00:00Z"}`, contract.DoorState{State: "fault", Reason: "jammed", At: at})
	ok(`{"state":"unknown","reason":"sensor not read"}`, contract.DoorState{State: "unknown", Reason: "sensor not read"})
	yes, no := true, false
	ok(`{"state":"closed","occupied":true}`, contract.DoorState{State: "closed", Occupied: &yes})
	ok(`{"state":"closed","occupied":false}`, contract.DoorState{State: "closed", Occupied: &no})

	f := func(payload, want string) {
		t.Helper()
		_, err := contract.DecodeDoorState([]byte(payload))
		checkBad(t, "DecodeDoorState("+payload+")", err, want)
	}
	f(``, "payload is empty")
	f(`{"state":"open"`, "malformed JSON")
	f(`{"state":1}`, `field "state" must be string, not number`)
	f(`{"state":"open","at":"noon"}`, "malformed JSON")
	f(`{"state":"ajar"}`, `door state "ajar" is not one; use open, closed, fault or unknown`)
	f(`{}`, `door state "" is not one`)
	f(`{"state":"closed","occupied":"yes"}`, `field "occupied" must be bool, not string`)
	f(`{"state":"open"} {"state":"closed"}`, "data after the object")
	f(`{"state":"open"}}`, "data after the object")
	f("{\"state\":\"open\",\"reason\":\"\xff\"}", "not UTF-8")
	f(`{"state":"open","reason":"`+strings.Repeat("r", contract.MaxPayload)+`"}`, "the limit is 65536")
}

func TestDecodeDoorCommand(t *testing.T) {
	got, err := contract.DecodeDoorCommand([]byte(`{"action":"open","request_id":"r1"}`))
	if want := (contract.DoorCommand{Action: "open", RequestID: "r1"}); err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v, nil", got, err, want)
	}
	f := func(payload, want string) {
		t.Helper()
		_, err := contract.DecodeDoorCommand([]byte(payload))
		checkBad(t, "DecodeDoorCommand("+payload+")", err, want)
	}
	f(``, "payload is empty")
	f(`{"action":"close"}`, `door action "close" is unknown; use "open"`)
	f(`{}`, `door action "" is unknown`)
	f(`{"action":"open","force":true}`, `unknown field "force"`)
	f(`{"action":"open"}]`, "data after the object")
	f(`{"action":["open"]}`, `field "action" must be string, not array`)
}

func TestCheckCode(t *testing.T) {
	f := func(code, want string) {
		t.Helper()
		err := contract.CheckCode(code)
		if want == "" {
			if err != nil {
				t.Errorf("CheckCode(%q): got %q; want nil", code, err)
			}
			return
		}
		checkBad(t, "CheckCode("+code+")", err, want)
	}
	f("0000", "")
	f("482913", "")
	f("123456789012", "")
	f("", "a code is 4 to 12 digits")
	f("123", "a code is 4 to 12 digits")
	f("1234567890123", "a code is 4 to 12 digits")
	f("12345a", "a code is digits only")
	f("1234.5", "a code is digits only")
	f("٤٨٢٩١٣", "a code is digits only")
	f("\x00\x00\x00\x00", "a code is digits only")
}

func TestMsgIDOf(t *testing.T) {
	f := func(payload, want string) {
		t.Helper()
		if got := contract.MsgIDOf([]byte(payload)); got != want {
			t.Errorf("MsgIDOf(%q): got %q; want %q", payload, got, want)
		}
	}
	f(`{"msg_id":"m-1","op":"bogus"}`, "m-1")
	f(`{"msg_id":"m-1","op":7,"reservation":"not an object"}`, "m-1")
	f(`{"msg_id":"m-1","colour":"red"}`, "m-1")
	f(`{"msg_id":"m-1"`, "")
	f(`{"msg_id":1}`, "")
	f(`{"msg_id":null}`, "")
	f(`{"op":"upsert"}`, "")
	f(`[]`, "")
	f(``, "")
	f(`{"msg_id":"`+strings.Repeat("m", 129)+`"}`, "")
	f(`{"msg_id":"`+strings.Repeat("m", 128)+`"}`, strings.Repeat("m", 128))
}

func TestRequestIDOf(t *testing.T) {
	f := func(payload, want string) {
		t.Helper()
		if got := contract.RequestIDOf([]byte(payload)); got != want {
			t.Errorf("RequestIDOf(%q): got %q; want %q", payload, got, want)
		}
	}
	f(`{"code":"12","request_id":"r1"}`, "r1")
	f(`{"code":12,"request_id":"r1"}`, "r1")
	f(`{"code":"12","request_id":"r1"`, "")
	f(`{"request_id":["r1"]}`, "")
	f(`{"code":"482913"}`, "")
	f(``, "")
	f(`{"request_id":"`+strings.Repeat("r", 129)+`"}`, "")
}

func TestDoorTopics(t *testing.T) {
	f := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	}
	f(contract.DoorCommandTopic(7), "locky/doors/7/command")
	f(contract.DoorStateTopic(12), "locky/doors/12/state")
	f(contract.DoorStateTopic(contract.MaxDoor), "locky/doors/9999/state")
}

func TestDoorFromTopic(t *testing.T) {
	ok := func(topic, leaf string, want int) {
		t.Helper()
		got, err := contract.DoorFromTopic(topic, leaf)
		if err != nil || got != want {
			t.Errorf("DoorFromTopic(%q, %q): got %d, %v; want %d, nil", topic, leaf, got, err, want)
		}
	}
	ok("locky/doors/7/state", "state", 7)
	ok("locky/doors/1/command", "command", 1)
	ok("locky/doors/9999/state", "state", 9999)

	f := func(topic, leaf, want string) {
		t.Helper()
		n, err := contract.DoorFromTopic(topic, leaf)
		if err == nil {
			t.Errorf("DoorFromTopic(%q, %q): got %d, nil; want an error containing %q", topic, leaf, n, want)
			return
		}
		if !errors.Is(err, contract.ErrBadTopic) {
			t.Errorf("DoorFromTopic(%q, %q): got %q; want an error wrapping ErrBadTopic", topic, leaf, err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("DoorFromTopic(%q, %q): got %q; want it to contain %q", topic, leaf, err, want)
		}
		if n != 0 {
			t.Errorf("DoorFromTopic(%q, %q): got door %d with the error; want 0", topic, leaf, n)
		}
	}
	f("", "state", "not a door topic")
	f("locky/door/7/state", "state", "not a door topic")
	f("Locky/doors/7/state", "state", "not a door topic")
	f("locky/doors/7", "state", "not a door topic")
	f("locky/doors/7/", "state", "not a door topic")
	f("locky/doors/7/command", "state", "not a door topic")
	f("locky/doors/7/state/x", "state", "not a door topic")
	f("locky/doors/+/state", "state", "door must be a number 1..9999")
	f("locky/doors//state", "state", "door must be a number 1..9999")
	f("locky/doors/0/state", "state", "door must be a number 1..9999")
	f("locky/doors/-7/state", "state", "door must be a number 1..9999")
	f("locky/doors/+7/state", "state", "door must be a number 1..9999")
	f("locky/doors/07/state", "state", "door must be a number 1..9999")
	f("locky/doors/10000/state", "state", "door must be a number 1..9999")
	f("locky/doors/99999999999999999999/state", "state", "door must be a number 1..9999")
	f("locky/doors/7 /state", "state", "door must be a number 1..9999")
}
