package gateway_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
)

// state is what a rejected message must leave untouched.
func state(t *testing.T, g *testGateway) string {
	t.Helper()
	rs, err := g.Store().Reservations()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := g.Store().Doors()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(struct {
		R any
		D any
	}{rs, ds})
	return string(b)
}

func TestBadDownstreamMessagesAreRejectedWholeWithANamedError(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("partners", contract.DownMessage{MsgID: "p-1", Op: contract.OpUpsert, Partner: &contract.Partner{ID: "acme"}})
	c.MustAck("doors", contract.DownMessage{MsgID: "d-1", Op: contract.OpUpsert, Door: &contract.Door{ID: 11, Size: "S", Partner: "acme"}})
	c.MustAck("reservations", reservation("ok-1", "R12", 3, 7, "123456", "654321", "777000"))

	big := `{"msg_id":"big","op":"upsert","reservation":{"id":"` + strings.Repeat("x", contract.MaxPayload) + `"}}`
	// Each case runs in its own t.Run: one rejected wrongly does not hide the next.
	f := func(name, topic, payload, msgID, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			c := c.With(t)
			before := state(t, g)
			ackOf := func(p []byte) bool {
				var a contract.Ack
				return json.Unmarshal(p, &a) == nil && a.MsgID == msgID
			}
			n := c.Count(contract.TopicAcks, ackOf)
			c.Publish(topic, payload)
			c.AwaitCount(contract.TopicAcks, ackOf, n+1)
			var last contract.Ack
			for _, m := range c.Received() {
				if m.Topic == contract.TopicAcks && ackOf(m.Payload) {
					_ = json.Unmarshal(m.Payload, &last)
				}
			}
			if last.OK || !strings.Contains(last.Error, want) {
				t.Fatalf("ack %+v; want ok:false with an error containing %q", last, want)
			}
			if got := c.Count(contract.TopicAcks, ackOf); got != n+1 {
				t.Fatalf("%d acks for msg_id %q; want exactly %d", got, msgID, n+1)
			}
			if s := state(t, g); s != before {
				t.Fatalf("state changed by a rejected message:\nbefore %s\nafter  %s", before, s)
			}
		})
	}
	f("malformed JSON", "locky/down/reservations", `{"msg_id":"b1","op":`, "", "malformed JSON")
	f("not JSON at all", "locky/down/doors", `hello`, "", "malformed JSON")
	f("wrong field type", "locky/down/reservations", `{"msg_id":"b2","op":"upsert","reservation":{"id":"R1","version":"one","door":1}}`, "b2", `"reservation.version"`)
	f("unknown field", "locky/down/reservations", `{"msg_id":"b3","op":"upsert","reservation":{"id":"R1","version":1,"door":1,"pickup_cod":"1"}}`, "b3", "pickup_cod")
	f("bad op", "locky/down/reservations", `{"msg_id":"b4","op":"merge","reservation":{"id":"R1"}}`, "b4", `op "merge"`)
	f("missing code", "locky/down/reservations", `{"msg_id":"b5","op":"upsert","reservation":{"id":"R1","version":1,"door":1,"deposit_code":"1234","pickup_code":"5678"}}`, "b5", "courier code is missing")
	f("code of the wrong shape", "locky/down/reservations", `{"msg_id":"b6","op":"upsert","reservation":{"id":"R1","version":1,"door":1,"deposit_code":"12ab","pickup_code":"5678","courier_code":"9999"}}`, "b6", "digits only")
	f("unknown door", "locky/down/reservations", mustJSON(t, reservation("b7", "R1", 1, 42, "111111", "222222", "333333")), "b7", "door 42 does not exist")
	f("door holds another reservation", "locky/down/reservations", mustJSON(t, reservation("b8", "R2", 1, 7, "111111", "222222", "333333")), "b8", "door 7 holds reservation R12")
	f("partner mismatch", "locky/down/reservations", mustJSON(t, reservation("b9", "R3", 1, 11, "111111", "222222", "333333")), "b9", `allocated to partner "acme"`)
	f("status moved past the locker", "locky/down/reservations", `{"msg_id":"b10","op":"upsert","reservation":{"id":"R12","version":4,"door":7,"status":"delivered","deposit_code":"123456","pickup_code":"654321","courier_code":"777000"}}`, "b10", "reservation R12 is arriving")
	f("code live in another reservation", "locky/down/reservations", mustJSON(t, reservation("b11", "R4", 1, 8, "123456", "222222", "333333")), "b11", "live code of reservation R12")
	f("delete a door holding a parcel", "locky/down/doors", `{"msg_id":"b12","op":"delete","door":{"id":7}}`, "b12", "door 7 holds reservation R12")
	f("unknown entity", "locky/down/lockers", `{"msg_id":"b13","op":"upsert","door":{"id":1}}`, "b13", `entity "lockers" is unknown`)
	f("two entities", "locky/down/doors", `{"msg_id":"b14","op":"upsert","door":{"id":1},"user":{"id":"u"}}`, "b14", "exactly one")
	f("unknown command", "locky/down/commands", `{"msg_id":"b15","command":"explode","door":1,"reason":"x"}`, "b15", `command "explode"`)
	f("command without reason", "locky/down/commands", `{"msg_id":"b16","command":"open_door","door":1}`, "b16", "reason is missing")
	f("sync without msg_id", "locky/down/sync", `{}`, "", "msg_id is missing")
	f("oversized payload", "locky/down/reservations", big, "big", "the limit is 65536")
}

func TestStaleAndRedeliveredUpdatesAreAckedAndIgnored(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", reservation("m-1", "R1", 5, 2, "121212", "343434", "565656"))
	before, err := g.Store().Reservation("R1")
	if err != nil {
		t.Fatal(err)
	}
	c.MustAck("reservations", reservation("m-1", "R1", 5, 2, "121212", "343434", "565656")) // redelivery
	c.MustAck("reservations", reservation("m-2", "R1", 4, 3, "999999", "888888", "777777")) // stale
	after, err := g.Store().Reservation("R1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("stale update changed the reservation:\n%+v\n%+v", before, after)
	}
	c.Code("999999", "stale-code")
	c.Display("stale-code", contract.ResultInvalidCode)
}

func TestBadScreenRequestsGetBadRequest(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := connect(t, g.MQTTAddr(), "locky/#")
	// Each case runs in its own t.Run: one answered wrongly does not hide the next.
	f := func(name, payload, requestID, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			c := c.With(t)
			c.Publish(contract.TopicScreenCode, payload)
			c.Await(contract.TopicScreenDisplay, func(p []byte) bool {
				var d contract.Display
				return json.Unmarshal(p, &d) == nil && d.Result == contract.ResultBadRequest &&
					d.RequestID == requestID && strings.Contains(d.Message, want)
			})
		})
	}
	f("not JSON", `1234`, "", "malformed JSON")
	f("letters in the code", `{"code":"12ab56","request_id":"s1"}`, "s1", "digits only")
	f("code too short", `{"code":"12","request_id":"s2"}`, "s2", "4 to 12 digits")
	f("no code", `{"request_id":"s3"}`, "s3", "code is missing")
	f("code of the wrong type", `{"code":123456,"request_id":"s4"}`, "s4", `field "code" must be string`)
	f("empty", ``, "", "payload is empty")
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
