package contract

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Operations of a downstream entity message.
const (
	OpUpsert = "upsert"
	OpDelete = "delete"
)

// Entities that the back-end manages through locky/down/{entity}.
const (
	EntityReservations = "reservations"
	EntityDoors        = "doors"
	EntityPartners     = "partners"
	EntityUsers        = "users"
)

// Reservation is a parcel as the back-end sends it. Each code comes either in
// plain (DepositCode) or as the hex HMAC-SHA256 of the code under the locker's
// code key (DepositHash); the locker stores only the hash.
type Reservation struct {
	ID          string     `json:"id"`
	Version     uint64     `json:"version"`
	Door        int        `json:"door"`
	Partner     string     `json:"partner,omitempty"`
	User        string     `json:"user,omitempty"`
	Status      string     `json:"status,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	DepositCode string     `json:"deposit_code,omitempty"`
	PickupCode  string     `json:"pickup_code,omitempty"`
	CourierCode string     `json:"courier_code,omitempty"`
	DepositHash string     `json:"deposit_hash,omitempty"`
	PickupHash  string     `json:"pickup_hash,omitempty"`
	CourierHash string     `json:"courier_hash,omitempty"`
}

// Door is a door of the locker. A door allocated to a partner only takes that
// partner's reservations. Disabled doors refuse new reservations.
type Door struct {
	ID       int    `json:"id"`
	Size     string `json:"size,omitempty"`
	Partner  string `json:"partner,omitempty"`
	Disabled bool   `json:"disabled,omitempty"`
}

// Partner is a retailer that doors may be allocated to.
type Partner struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// User is a person or system known to the back-end (couriers, support).
type User struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	Role string `json:"role,omitempty"`
}

// DownMessage is a message on locky/down/{entity}. Exactly the field of its
// entity is set.
type DownMessage struct {
	MsgID       string       `json:"msg_id"`
	Op          string       `json:"op"`
	Reservation *Reservation `json:"reservation,omitempty"`
	Door        *Door        `json:"door,omitempty"`
	Partner     *Partner     `json:"partner,omitempty"`
	User        *User        `json:"user,omitempty"`
}

// Command is a support command on locky/down/commands.
type Command struct {
	MsgID   string `json:"msg_id"`
	Command string `json:"command"`
	Door    int    `json:"door"`
	Reason  string `json:"reason,omitempty"`
}

// CommandOpenDoor opens a door remotely (SPEC §5.8).
const CommandOpenDoor = "open_door"

// SyncRequest on locky/down/sync asks for a snapshot on locky/up/snapshot.
type SyncRequest struct {
	MsgID string `json:"msg_id"`
}

// ErrBadPayload wraps every decoding and validation error: the message is
// rejected whole and the error text says what to fix.
var ErrBadPayload = errors.New("bad payload")

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

// DecodeDown decodes and validates a message of locky/down/{entity}.
func DecodeDown(entity string, payload []byte) (DownMessage, error) {
	var m DownMessage
	if err := checkRaw(payload); err != nil {
		return m, err
	}
	if err := strictUnmarshal(payload, &m, keysDown, "the message"); err != nil {
		return m, err
	}
	if err := checkMsgID(m.MsgID); err != nil {
		return m, err
	}
	if m.Op != OpUpsert && m.Op != OpDelete {
		return m, bad("op %q is unknown; use %q or %q", m.Op, OpUpsert, OpDelete)
	}
	set := 0
	for _, p := range []bool{m.Reservation != nil, m.Door != nil, m.Partner != nil, m.User != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return m, bad("a %s message carries exactly one %q object", entity, singular(entity))
	}
	switch entity {
	case EntityReservations:
		if m.Reservation == nil {
			return m, bad("field %q is missing", "reservation")
		}
		return m, validateReservation(m.Op, m.Reservation)
	case EntityDoors:
		if m.Door == nil {
			return m, bad("field %q is missing", "door")
		}
		return m, validateDoor(m.Door)
	case EntityPartners:
		if m.Partner == nil {
			return m, bad("field %q is missing", "partner")
		}
		return m, checkID("partner", m.Partner.ID)
	case EntityUsers:
		if m.User == nil {
			return m, bad("field %q is missing", "user")
		}
		return m, checkID("user", m.User.ID)
	}
	return m, bad("entity %q is unknown; use reservations, doors, partners, users, commands, sync or audit", entity)
}

func singular(entity string) string { return strings.TrimSuffix(entity, "s") }

func validateDoor(d *Door) error {
	if d.ID <= 0 || d.ID > MaxDoor {
		return bad("door id must be 1..%d, not %d", MaxDoor, d.ID)
	}
	if len(d.Size) > 16 {
		return bad("door size is longer than 16 bytes")
	}
	if d.Partner != "" {
		return checkID("partner", d.Partner)
	}
	return nil
}

func validateReservation(op string, r *Reservation) error {
	if err := checkID("reservation", r.ID); err != nil {
		return err
	}
	if op == OpDelete {
		return nil
	}
	if r.Version == 0 {
		return bad("reservation %s: version must be 1 or more", r.ID)
	}
	if r.Door <= 0 || r.Door > MaxDoor {
		return bad("reservation %s: door must be 1..%d, not %d", r.ID, MaxDoor, r.Door)
	}
	switch r.Status {
	case "", StatusArriving, StatusStored, StatusDelivered, StatusReturned, StatusCancelled:
	default:
		return bad("reservation %s: status %q is unknown", r.ID, r.Status)
	}
	if r.Partner != "" {
		if err := checkID("partner", r.Partner); err != nil {
			return err
		}
	}
	for _, c := range []struct{ kind, code, hash string }{
		{KindDeposit, r.DepositCode, r.DepositHash},
		{KindPickup, r.PickupCode, r.PickupHash},
		{KindCourier, r.CourierCode, r.CourierHash},
	} {
		switch {
		case c.code == "" && c.hash == "":
			return bad("reservation %s: %s code is missing (send %s_code or %s_hash)", r.ID, c.kind, c.kind, c.kind)
		case c.code != "" && c.hash != "":
			return bad("reservation %s: send %s_code or %s_hash, not both", r.ID, c.kind, c.kind)
		case c.code != "":
			if err := CheckCode(c.code); err != nil {
				return fmt.Errorf("reservation %s: %s code: %w", r.ID, c.kind, err)
			}
		default:
			if b, err := hex.DecodeString(c.hash); err != nil || len(b) != 32 {
				return bad("reservation %s: %s_hash must be 64 hex digits (HMAC-SHA256)", r.ID, c.kind)
			}
		}
	}
	// Hex is case-insensitive: "AB…" and "ab…" are the same hash.
	codes := []string{r.DepositCode + strings.ToLower(r.DepositHash), r.PickupCode + strings.ToLower(r.PickupHash),
		r.CourierCode + strings.ToLower(r.CourierHash)}
	if codes[0] == codes[1] || codes[0] == codes[2] || codes[1] == codes[2] {
		return bad("reservation %s: deposit, pickup and courier codes must differ", r.ID)
	}
	return nil
}

// Code length bounds: a locker code is 4 to 12 digits.
const (
	MinCodeLen = 4
	MaxCodeLen = 12
)

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

// DecodeCommand decodes and validates a message of locky/down/commands.
func DecodeCommand(payload []byte) (Command, error) {
	var c Command
	if err := checkRaw(payload); err != nil {
		return c, err
	}
	if err := strictUnmarshal(payload, &c, keysCommand, "the command"); err != nil {
		return c, err
	}
	if err := checkMsgID(c.MsgID); err != nil {
		return c, err
	}
	if c.Command != CommandOpenDoor {
		return c, bad("command %q is unknown; use %q", c.Command, CommandOpenDoor)
	}
	if c.Door <= 0 || c.Door > MaxDoor {
		return c, bad("door must be 1..%d, not %d", MaxDoor, c.Door)
	}
	if c.Reason == "" {
		return c, bad("reason is missing: say why the door is opened (it is audited)")
	}
	if len(c.Reason) > 512 {
		return c, bad("reason is longer than 512 bytes")
	}
	return c, nil
}

// DecodeSync decodes and validates a message of locky/down/sync.
func DecodeSync(payload []byte) (SyncRequest, error) {
	var s SyncRequest
	if err := checkRaw(payload); err != nil {
		return s, err
	}
	if err := strictUnmarshal(payload, &s, keysSync, "the sync request"); err != nil {
		return s, err
	}
	return s, checkMsgID(s.MsgID)
}

// DecodeCodeRequest decodes and validates a code entered on the touchscreen.
func DecodeCodeRequest(payload []byte) (CodeRequest, error) {
	var c CodeRequest
	if err := checkRaw(payload); err != nil {
		return c, err
	}
	if err := strictUnmarshal(payload, &c, keysCodeRequest, "the code request"); err != nil {
		return c, err
	}
	if len(c.RequestID) > maxIDLen {
		return c, bad("request_id is longer than %d bytes", maxIDLen)
	}
	if c.Code == "" {
		return c, bad("code is missing")
	}
	return c, CheckCode(c.Code)
}

// RequestIDOf extracts the request_id of a payload that may otherwise be
// broken, as MsgIDOf does the msg_id.
func RequestIDOf(payload []byte) string {
	if s, ok := topString(payload, "request_id"); ok && len(s) <= maxIDLen {
		return s
	}
	return ""
}

// DecodeDoorState decodes a door state report.
func DecodeDoorState(payload []byte) (DoorState, error) {
	var s DoorState
	if err := checkRaw(payload); err != nil {
		return s, err
	}
	if err := decodeOne(payload, &s, keysDoorState, "the door state", false); err != nil {
		return s, err
	}
	switch s.State {
	case DoorOpen, DoorClosed, DoorFault:
		return s, nil
	}
	return s, bad("door state %q is unknown; use open, closed or fault", s.State)
}

// DecodeDoorCommand decodes a door command.
func DecodeDoorCommand(payload []byte) (DoorCommand, error) {
	var c DoorCommand
	if err := checkRaw(payload); err != nil {
		return c, err
	}
	if err := strictUnmarshal(payload, &c, keysDoorCommand, "the door command"); err != nil {
		return c, err
	}
	if c.Action != "open" {
		return c, bad("door action %q is unknown; use %q", c.Action, "open")
	}
	return c, nil
}
