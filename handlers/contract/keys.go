package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// Duplicate and case-variant keys.
//
// encoding/json lets the last of two equal keys win and matches a key to a
// field case-insensitively ("Pickup_Code", and even "pic\u212aup_code" with a
// Kelvin sign, fill PickupCode). Another parser may keep the first value, or
// ignore a key that is not spelled exactly, so a back-end and a locker could
// disagree on a code. checkKeys therefore refuses, at any depth, a key that
// appears twice in one object, and a key that matches one of the target's
// fields only case-insensitively: keys are case-sensitive, spelled as in
// SPEC §4. Other unknown keys are left to the decoder (refused by the strict
// ones, ignored in a door state).

// maxDepth bounds the nesting of a payload: the contract's messages are two
// levels deep, and a bound keeps a 64 KiB "[[[[…" from costing a frame per byte.
const maxDepth = 32

// keySet is what one JSON object of the contract accepts: each field's exact
// JSON name and, for a field holding objects, what those accept. The sets
// are built from the payload types when the program starts, and only read.
type keySet map[string]keySet

var (
	keysDown        = keysOf[DownMessage]()
	keysCommand     = keysOf[Command]()
	keysSync        = keysOf[SyncRequest]()
	keysAudit       = keysOf[AuditRequest]()
	keysCodeRequest = keysOf[CodeRequest]()
	keysDoorState   = keysOf[DoorState]()
	keysDoorCommand = keysOf[DoorCommand]()
)

var typeUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// keysOf returns the key set of the struct type T.
func keysOf[T any]() keySet { return keysOfType(reflect.TypeFor[T]()) }

func keysOfType(t reflect.Type) keySet {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(typeUnmarshaler) {
		return nil // not decoded field by field (a scalar, a time.Time)
	}
	ks := keySet{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		ks[name] = keysOfType(f.Type)
	}
	return ks
}

// value is an object or array open in the walk of checkKeys.
type value struct {
	keys    keySet              // what an object accepts, or an array's elements; nil: unknown
	seen    []string            // an object's keys so far
	many    map[string]struct{} // the same, once there are many
	key     string              // the key whose value is being read
	inValue bool                // key is set and its value not yet complete
	array   bool
	index   int // an array's current element
}

// checkKeys walks the first JSON value of payload, token by token, and
// refuses a duplicate key, or a case variant of a field name, at any depth;
// what names the top object in the error ("the message", "the code request").
func checkKeys(payload []byte, top keySet, what string) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber() // numbers are skipped, never parsed
	var buf [3]value
	stack := buf[:0]
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // checkRaw lets no empty payload through
			}
			return bad("malformed JSON: %s", jsonErr(err))
		}
		n := len(stack)
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if n == maxDepth {
				return bad("malformed JSON: nested deeper than %d levels", maxDepth)
			}
			v := value{keys: top, array: tok == json.Delim('[')}
			if n > 0 {
				if cur := &stack[n-1]; cur.array {
					v.keys = cur.keys
				} else {
					v.keys = cur.keys[cur.key]
				}
			}
			stack = append(stack, v)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:n-1]
			n--
		default:
			if key, ok := tok.(string); ok && n > 0 && !stack[n-1].array && !stack[n-1].inValue {
				if err := stack[n-1].addKey(key, stack, what); err != nil {
					return err
				}
				continue
			}
		}
		// A value is complete.
		if n == 0 {
			return nil
		}
		stack[n-1].endValue()
	}
}

// endValue records that the value of v's current key or element is complete.
func (v *value) endValue() {
	if v.array {
		v.index++
	}
	v.inValue = false
}

// manyKeys is the number of keys past which an object's keys go in a map.
const manyKeys = 16

// addKey checks the next key of v, the object on top of stack.
func (v *value) addKey(key string, stack []value, what string) error {
	dup := false
	if v.many != nil {
		_, dup = v.many[key]
		v.many[key] = struct{}{}
	} else {
		for _, k := range v.seen {
			dup = dup || k == key
		}
		v.seen = append(v.seen, key)
		if len(v.seen) > manyKeys {
			v.many = make(map[string]struct{}, 2*manyKeys)
			for _, k := range v.seen {
				v.many[k] = struct{}{}
			}
		}
	}
	if dup {
		return bad("duplicate key %q in %s: send each key once", key, pathOf(stack, what))
	}
	v.key, v.inValue = key, true
	if _, ok := v.keys[key]; ok || v.keys == nil {
		return nil
	}
	for name := range v.keys {
		if strings.EqualFold(name, key) { // as encoding/json would match them
			return bad("key %q in %s must be spelled %q: keys are case-sensitive", key, pathOf(stack, what), name)
		}
	}
	return nil
}

// pathOf names the object on top of stack as encoding/json names a field
// ("reservation", "board.sensors[2]"); the top object is what.
func pathOf(stack []value, what string) string {
	if len(stack) == 1 {
		return what
	}
	var b strings.Builder
	for i, v := range stack[:len(stack)-1] {
		switch {
		case v.array:
			b.WriteString("[" + strconv.Itoa(v.index) + "]")
		case i > 0:
			b.WriteString("." + v.key)
		default:
			b.WriteString(v.key)
		}
	}
	return b.String()
}

// topString returns the string value of key in the top-level object of
// payload, when the payload is well-formed JSON and key, spelled exactly,
// appears there once; otherwise ok is false.
func topString(payload []byte, key string) (s string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	found := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", false
		}
		if tok != key {
			continue
		}
		found++
		ok = json.Unmarshal(raw, &s) == nil
	}
	if _, err := dec.Token(); err != nil { // '}'
		return "", false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", false // data after the object
	}
	if found != 1 || !ok {
		return "", false
	}
	return s, true
}
