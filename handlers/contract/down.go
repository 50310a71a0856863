package contract

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
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
