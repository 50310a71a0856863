package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The strict JSON decoding that every decoder of the contract shares: one
// object, no unknown, duplicate or case-variant keys, nothing after it.

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadPayload, fmt.Sprintf(format, args...))
}

// checkRaw rejects payloads that no decoder should look at.
func checkRaw(payload []byte) error {
	if len(payload) > MaxPayload {
		return bad("payload is %d bytes; the limit is %d", len(payload), MaxPayload)
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return bad("payload is empty; send a JSON object")
	}
	if !utf8.Valid(payload) {
		return bad("payload is not UTF-8")
	}
	return nil
}

// strictUnmarshal decodes one JSON object, refusing unknown fields, duplicate
// keys, case variants of field names and trailing data; what names the object
// in errors.
func strictUnmarshal(payload []byte, v any, keys keySet, what string) error {
	return decodeOne(payload, v, keys, what, true)
}

// decodeOne decodes one JSON value and refuses anything after it (a decoder's
// More reports false before a stray '}' or ']', so it cannot tell). Then it
// refuses duplicate keys and case variants of the field names in keys
// (checkKeys), which encoding/json resolved its own way: the payload is
// rejected whole, so what the decoder made of them is never used. Checking
// second lets junk be refused at the decoder's cost alone.
func decodeOne(payload []byte, v any, keys keySet, what string, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return bad("malformed JSON: %s", jsonErr(err))
	}
	if len(bytes.TrimSpace(payload[dec.InputOffset():])) > 0 {
		return bad("malformed JSON: data after the object")
	}
	return checkKeys(payload, keys, what)
}

func jsonErr(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Sprintf("the payload must be a JSON object, not %s", te.Value)
		}
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// MsgIDOf extracts the msg_id of a payload that may otherwise be broken, so that
// the error ack can name it. It returns "" when there is none: the payload is
// not a JSON object, or has no "msg_id" string spelled exactly, or has two
// (which of them the back-end meant is not for the locker to guess).
func MsgIDOf(payload []byte) string {
	if s, ok := topString(payload, "msg_id"); ok && len(s) <= maxIDLen {
		return s
	}
	return ""
}

const maxIDLen = 128

func checkMsgID(id string) error {
	if id == "" {
		return bad("msg_id is missing")
	}
	if len(id) > maxIDLen {
		return bad("msg_id is longer than %d bytes", maxIDLen)
	}
	return nil
}

func checkID(what, id string) error {
	if id == "" {
		return bad("%s id is missing", what)
	}
	if len(id) > maxIDLen {
		return bad("%s id is longer than %d bytes", what, maxIDLen)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return bad("%s id contains a control character", what)
		}
	}
	return nil
}

// CheckCode reports whether s has the shape of a locker code.
func CheckCode(s string) error {
	if len(s) < MinCodeLen || len(s) > MaxCodeLen {
		return bad("a code is %d to %d digits", MinCodeLen, MaxCodeLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return bad("a code is digits only")
		}
	}
	return nil
}
