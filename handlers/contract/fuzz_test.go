package contract_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
)

// checkRejected fails unless a decoder's error is a payload error that says something.
func checkRejected(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, contract.ErrBadPayload) {
		t.Fatalf("got %q; want an error wrapping ErrBadPayload", err)
	}
	if err.Error() == contract.ErrBadPayload.Error() {
		t.Fatalf("got %q; want an error that names the problem", err)
	}
}

// reencode marshals a decoded value again; ok is false when the encoding
// outgrew the payload limit (escapes can lengthen strings), so it cannot be
// decoded again.
func reencode(t *testing.T, v any) ([]byte, bool) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("cannot marshal decoded %+v: %v", v, err)
	}
	return b, len(b) <= contract.MaxPayload
}

// keysIn returns every object key of payload's first JSON value, at any
// depth, and how many of them are distinct within their object: a payload
// without duplicate keys has as many of one as of the other.
func keysIn(t *testing.T, payload []byte) (keys []string, distinct int) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(payload))
	var walk func()
	walk = func() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("accepted %q, which does not tokenize: %v", payload, err)
		}
		switch tok {
		case json.Delim('{'):
			set := map[string]bool{}
			for dec.More() {
				k, _ := dec.Token()
				keys = append(keys, k.(string))
				set[k.(string)] = true
				walk()
			}
			distinct += len(set)
			dec.Token() // '}'
		case json.Delim('['):
			for dec.More() {
				walk()
			}
			dec.Token() // ']'
		}
	}
	walk()
	return keys, distinct
}

// checkKeysOf fails unless an accepted payload has no duplicate key and, when
// exact is not nil, only keys for which exact reports true.
func checkKeysOf(t *testing.T, payload []byte, exact func(string) bool) {
	t.Helper()
	keys, distinct := keysIn(t, payload)
	if len(keys) != distinct {
		t.Fatalf("accepted %q with a duplicate key among %q", payload, keys)
	}
	for _, k := range keys {
		if exact != nil && !exact(k) {
			t.Fatalf("accepted %q with the key %q, not spelled as the contract spells it", payload, k)
		}
	}
}

// snakeCase reports whether k is spelled as every key of the contract is.
func snakeCase(k string) bool {
	return k != "" && strings.Trim(k, "abcdefghijklmnopqrstuvwxyz_") == ""
}

func FuzzDecodeDown(f *testing.F) {
	for _, c := range []struct{ entity, payload string }{
		{"reservations", down("upsert", "reservation", validReservation)},
		{"reservations", down("upsert", "reservation", reservation("deposit_code", "", "deposit_hash", `"`+hashA+`"`))},
		{"reservations", down("upsert", "reservation", reservation("status", `"cancelled"`, "expires_at", `"2026-12-01T01:00:00.5+01:00"`))},
		{"reservations", down("delete", "reservation", `{"id":"R12"}`)},
		{"reservations", down("upsert", "reservation", reservation("pickup_code", `"123456"`))},
		{"reservations", down("upsert", "reservation", validReservation) + "}"},
		{"doors", down("upsert", "door", `{"id":7,"size":"M","partner":"acme","disabled":true}`)},
		{"partners", down("upsert", "partner", `{"id":"acme","name":"Acme \u2028 <&>"}`)},
		{"users", down("delete", "user", `{"id":"u1"}`)},
		{"users", `{"MSG_ID":"m","OP":"delete","User":{"ID":"u"}}`},
		{"sync", `{"msg_id":"m-2"}`},
		{"reservations", ""},
		{"reservations", "[]"},
		{"reservations", "{\"msg_id\":\"\xff\"}"},
		{"reservations", down("upsert", "reservation", strings.TrimSuffix(validReservation, "}")+`,"pickup_code":"999999"}`)},
		{"reservations", down("upsert", "reservation", strings.TrimSuffix(validReservation, "}")+`,"Pickup_Code":"999999"}`)},
		{"reservations", down("upsert", "reservation", strings.TrimSuffix(validReservation, "}")+`,"pic\u212aup_code":"999999"}`)},
		{"reservations", `{"msg_id":"m-1","msg_id":"m-2","op":"delete","reservation":{"id":"R12"}}`},
		{"doors", down("upsert", "door", `{"id":7,"x":[{"a":1,"a":2}]}`)},
	} {
		f.Add(c.entity, []byte(c.payload))
	}
	f.Fuzz(func(t *testing.T, entity string, payload []byte) {
		m, err := contract.DecodeDown(entity, payload)
		if err != nil {
			checkRejected(t, err)
			return
		}
		if m.MsgID == "" || (m.Op != contract.OpUpsert && m.Op != contract.OpDelete) {
			t.Fatalf("accepted %q with msg_id %q and op %q", payload, m.MsgID, m.Op)
		}
		checkKeysOf(t, payload, snakeCase)
		if got := contract.MsgIDOf(payload); got != m.MsgID {
			t.Fatalf("MsgIDOf(%q): got %q; want %q", payload, got, m.MsgID)
		}
		b, ok := reencode(t, m)
		if !ok {
			return
		}
		m2, err := contract.DecodeDown(entity, b)
		if err != nil {
			t.Fatalf("decoded %q, re-encoded as %q: got %q; want it to decode again", payload, b, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("decoded %q as %+v; re-encoded %q decodes as %+v", payload, m, b, m2)
		}
	})
}

func FuzzDecodeCodeRequest(f *testing.F) {
	for _, p := range []string{
		`{"code":"482913","request_id":"r1"}`,
		`{"code":"0000"}`,
		`{"code":"123456789012","request_id":""}`,
		`{"code":"48291a","request_id":"r1"}`,
		`{"code":482913}`,
		`{"code":"482913","request_id":"r1"}}`,
		`{"CODE":"482913","Request_Id":"r1"}`,
		`{"code":"482913","request_id":"r1","request_id":"r2"}`,
		`{"code":"\u0034\u0038\u0032\u0039"}`,
		`{"code":"482913","code":"000000"}`,
		`{"code":"482913","Code":"000000"}`,
		`{"co\u0064e":"482913","code":"000000"}`,
		``,
		`null`,
	} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := contract.DecodeCodeRequest(payload)
		if err != nil {
			checkRejected(t, err)
			return
		}
		if err := contract.CheckCode(c.Code); err != nil {
			t.Fatalf("accepted %q with code %q: %v", payload, c.Code, err)
		}
		checkKeysOf(t, payload, snakeCase)
		if got := contract.RequestIDOf(payload); got != c.RequestID {
			t.Fatalf("RequestIDOf(%q): got %q; want %q", payload, got, c.RequestID)
		}
		b, ok := reencode(t, c)
		if !ok {
			return
		}
		c2, err := contract.DecodeCodeRequest(b)
		if err != nil || c2 != c {
			t.Fatalf("decoded %q as %+v; re-encoded %q: got %+v, %v", payload, c, b, c2, err)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	for _, p := range []string{
		`{"msg_id":"m-9","command":"open_door","door":7,"reason":"ticket 881"}`,
		`{"msg_id":"m-9","command":"open_door","door":9999,"reason":"\u00e9"}`,
		`{"msg_id":"m-9","command":"open_door","door":0,"reason":"x"}`,
		`{"msg_id":"m-9","command":"open_door","door":7}`,
		`{"msg_id":"m-9","command":"reboot","door":7,"reason":"x"}`,
		`{"msg_id":"m-9","command":"open_door","door":7.0,"reason":"x"}`,
		`{"msg_id":"m-9","command":"open_door","door":7,"reason":"x"} {}`,
		`{"msg_id":"m-9","command":"open_door","door":7,"door":8,"reason":"x"}`,
		`{"msg_id":"m-9","command":"open_door","DOOR":7,"reason":"x"}`,
		``,
	} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := contract.DecodeCommand(payload)
		if err != nil {
			checkRejected(t, err)
			return
		}
		if c.MsgID == "" || c.Command != contract.CommandOpenDoor || c.Door < 1 || c.Door > contract.MaxDoor || c.Reason == "" {
			t.Fatalf("accepted %q as %+v", payload, c)
		}
		checkKeysOf(t, payload, snakeCase)
		if got := contract.MsgIDOf(payload); got != c.MsgID {
			t.Fatalf("MsgIDOf(%q): got %q; want %q", payload, got, c.MsgID)
		}
		b, ok := reencode(t, c)
		if !ok {
			return
		}
		c2, err := contract.DecodeCommand(b)
		if err != nil || c2 != c {
			t.Fatalf("decoded %q as %+v; re-encoded %q: got %+v, %v", payload, c, b, c2, err)
		}
	})
}

func FuzzDecodeDoorState(f *testing.F) {
	for _, p := range []string{
		`{"state":"open"}`,
		`{"state":"closed","reason":"","at":"2026-03-01T12:00:00Z"}`,
		`{"state":"fault","reason":"jammed","board":{"fw":"1.2","sensors":[{"id":1},{"id":2}]}}`,
		`{"state":"open","state":"closed"}`,
		`{"state":"open","State":"closed"}`,
		`{"state":"open","\u017ftate":"closed"}`,
		`{"state":"open","board":{"fw":"1","fw":"2"}}`,
		`{"state":"ajar"}`,
		`[]`,
	} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		s, err := contract.DecodeDoorState(payload)
		if err != nil {
			checkRejected(t, err)
			return
		}
		if s.State != contract.DoorOpen && s.State != contract.DoorClosed && s.State != contract.DoorFault {
			t.Fatalf("accepted %q with state %q", payload, s.State)
		}
		// Unknown keys are ignored, but none that encoding/json would take
		// for a field.
		checkKeysOf(t, payload, func(k string) bool {
			for _, name := range []string{"state", "reason", "at"} {
				if strings.EqualFold(k, name) && k != name {
					return false
				}
			}
			return true
		})
		b, ok := reencode(t, s)
		if !ok {
			return
		}
		s2, err := contract.DecodeDoorState(b)
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("decoded %q as %+v; re-encoded %q: got %+v, %v", payload, s, b, s2, err)
		}
	})
}

func FuzzDoorFromTopic(f *testing.F) {
	f.Add("locky/doors/7/state", "state", 7)
	f.Add("locky/doors/9999/command", "command", 9999)
	f.Add("locky/doors/07/state", "state", 10000)
	f.Add("locky/doors/+/state", "state", 0)
	f.Add("locky/doors/-1/state", "state", -1)
	f.Add("locky/doors/7/state/x", "state/x", 1)
	f.Add("locky/doors/7/state", "", 1<<40)
	f.Fuzz(func(t *testing.T, topic, leaf string, n int) {
		if door, err := contract.DoorFromTopic(topic, leaf); err != nil {
			if !errors.Is(err, contract.ErrBadTopic) || door != 0 {
				t.Fatalf("DoorFromTopic(%q, %q): got %d, %q; want 0 and an error wrapping ErrBadTopic", topic, leaf, door, err)
			}
		} else if door < 1 || door > contract.MaxDoor || topic != "locky/doors/"+strconv.Itoa(door)+"/"+leaf {
			t.Fatalf("DoorFromTopic(%q, %q): got %d; want it to name the topic's door", topic, leaf, door)
		}

		valid := n >= 1 && n <= contract.MaxDoor
		for _, c := range []struct{ topic, leaf string }{
			{contract.DoorStateTopic(n), "state"},
			{contract.DoorCommandTopic(n), "command"},
		} {
			door, err := contract.DoorFromTopic(c.topic, c.leaf)
			if valid && (err != nil || door != n) {
				t.Fatalf("DoorFromTopic(%q, %q): got %d, %v; want %d", c.topic, c.leaf, door, err, n)
			}
			if !valid && err == nil {
				t.Fatalf("DoorFromTopic(%q, %q): got %d; want an error for door %d", c.topic, c.leaf, door, n)
			}
		}
	})
}
