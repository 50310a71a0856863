// Package contract is the topic contract of the locker's local broker (SPEC §4):
// the topic names, the payload types and their decoders. Handlers depend on this
// package and never on each other.
//
// Its place in the layering: the bottom; it imports no package of the
// locker.
package contract

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultGrace is how long a used code stays valid by default (SPEC §5): the
// controller, which judges codes, and the store handler, which decides
// whether an old reservation's code may be reused, must agree on it.
const DefaultGrace = 10 * time.Minute

// MaxPayload is the largest payload any topic accepts (SPEC §4: 64 KiB).
const MaxPayload = 64 * 1024

// Topics of the local broker.
const (
	TopicScreenCode    = "locky/screen/code"
	TopicScreenDisplay = "locky/screen/display"
	TopicDoorCommands  = "locky/doors/+/command" // filter
	TopicDoorStates    = "locky/doors/+/state"   // filter
	TopicDownPrefix    = "locky/down/"
	TopicDownAll       = "locky/down/+" // filter
	TopicAcks          = "locky/up/acks"
	TopicEvents        = "locky/up/events"
	TopicSnapshot      = "locky/up/snapshot"
	TopicDownCommands  = "locky/down/commands"
	TopicDownSync      = "locky/down/sync"
	TopicDownAudit     = "locky/down/audit"
	TopicAudit         = "locky/up/audit"
)

// DoorCommandTopic is the topic on which door n receives its commands.
func DoorCommandTopic(door int) string { return "locky/doors/" + strconv.Itoa(door) + "/command" }

// DoorStateTopic is the (retained) topic on which door n reports its state.
func DoorStateTopic(door int) string { return "locky/doors/" + strconv.Itoa(door) + "/state" }

// ErrBadTopic is returned by DoorFromTopic for a topic that is not a door topic
// with a positive door number.
var ErrBadTopic = errors.New("not a door topic locky/doors/{door}/...")

// DoorFromTopic returns the door number of a locky/doors/{door}/{leaf} topic.
func DoorFromTopic(topic, leaf string) (int, error) {
	rest, ok := strings.CutPrefix(topic, "locky/doors/")
	if !ok {
		return 0, fmt.Errorf("%q: %w", topic, ErrBadTopic)
	}
	num, l, ok := strings.Cut(rest, "/")
	if !ok || l != leaf {
		return 0, fmt.Errorf("%q: %w", topic, ErrBadTopic)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || n > MaxDoor || num != strconv.Itoa(n) {
		return 0, fmt.Errorf("%q: door must be a number 1..%d: %w", topic, MaxDoor, ErrBadTopic)
	}
	return n, nil
}

// MaxDoor is the largest door number a locker may have.
const MaxDoor = 9999

// Display results (SPEC §4).
const (
	ResultOpened      = "opened"
	ResultInvalidCode = "invalid_code"
	ResultExpired     = "expired"
	ResultLockedOut   = "locked_out"
	ResultDoorFault   = "door_fault"
	ResultBusy        = "busy"
	ResultBadRequest  = "bad_request"
)

// CodeRequest is published by the touchscreen on locky/screen/code.
type CodeRequest struct {
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
}

// Display is published by the controller on locky/screen/display.
type Display struct {
	RequestID   string `json:"request_id"`
	Result      string `json:"result"`
	Door        int    `json:"door,omitempty"`
	Message     string `json:"message"`
	RetryAfterS int    `json:"retry_after_s,omitempty"`
}

// DoorCommand is published by the controller on locky/doors/{door}/command.
type DoorCommand struct {
	Action    string `json:"action"`
	RequestID string `json:"request_id,omitempty"`
}

// Door states reported on locky/doors/{door}/state.
const (
	DoorOpen   = "open"
	DoorClosed = "closed"
	DoorFault  = "fault"
	// DoorUnknown is a door whose sensor could not be read: the workflow
	// takes it as no news, never as closed.
	DoorUnknown = "unknown"
)

// DoorState is published, retained, by a door lock on locky/doors/{door}/state.
type DoorState struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Occupied is whether a parcel is in the door, where the board has an
	// occupancy (infrared) input; nil where it does not know.
	Occupied *bool     `json:"occupied,omitempty"`
	At       time.Time `json:"at"`
}

// Reservation statuses.
const (
	StatusArriving  = "arriving"
	StatusStored    = "stored"
	StatusDelivered = "delivered"
	StatusReturned  = "returned"
	StatusCancelled = "cancelled"
)

// Event types (SPEC §4).
const (
	EventStored     = "reservation.stored"
	EventDelivered  = "reservation.delivered"
	EventReopened   = "reservation.reopened"
	EventReturned   = "reservation.returned"
	EventDoorFault  = "door.fault"
	EventLeftOpen   = "door.left_open"
	EventForcedOpen = "door.forced_open"
	EventLockout    = "code.lockout"
	EventRemoteOpen = "door.remote_open"
	EventDoorClosed = "door.closed"
	// EventEmptyAfterDeposit: a deposit's door closed with its occupancy
	// sensor saying empty; the reservation stays arriving and the deposit
	// code stays unused.
	EventEmptyAfterDeposit = "door.empty_after_deposit"
	// EventOccupiedAfterPickup: a pickup's door closed with its occupancy
	// sensor saying a parcel is still in; the reservation is delivered (the
	// customer opened it) and support learns of it.
	EventOccupiedAfterPickup = "door.occupied_after_pickup"
	// EventStoreRecovered: the locker's database commits again after commits
	// failed (a full disk: Reason says why and for how long). What failed
	// meanwhile has been retried; downstream messages acked with an error
	// then should be sent again.
	EventStoreRecovered = "store.recovered"
)

// Event is published upstream on locky/up/events. EventID is unique per locker
// and increases (it is the outbox sequence, zero-padded so that it also sorts
// as a string).
type Event struct {
	EventID     string    `json:"event_id"`
	Type        string    `json:"type"`
	Reservation string    `json:"reservation,omitempty"`
	Door        int       `json:"door,omitempty"`
	Status      string    `json:"status,omitempty"`
	CodeKind    string    `json:"code_kind,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	RetryAfterS int       `json:"retry_after_s,omitempty"`
	At          time.Time `json:"at"`
}

// Ack answers every downstream message on locky/up/acks.
type Ack struct {
	MsgID string `json:"msg_id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// ReservationState is a reservation as the locker reports it: in the
// snapshot on locky/up/snapshot, and to its own pages. It carries no codes
// and no hashes; UsedAt says when each code kind was first used.
type ReservationState struct {
	ID        string               `json:"id"`
	Version   uint64               `json:"version"`
	Door      int                  `json:"door"`
	Partner   string               `json:"partner,omitempty"`
	User      string               `json:"user,omitempty"`
	Status    string               `json:"status"`
	ExpiresAt time.Time            `json:"expires_at,omitzero"`
	UsedAt    map[string]time.Time `json:"used_at,omitempty"`
	UpdatedAt time.Time            `json:"updated_at"`
}

// Code kinds.
const (
	KindDeposit = "deposit"
	KindPickup  = "pickup"
	KindCourier = "courier"
)

// Message is a message as a handler receives it from the broker.
type Message struct {
	Topic   string
	Payload []byte
	// ResponseTopic and Correlation are the MQTT 5 request/response
	// properties, when the publisher set them.
	ResponseTopic string
	Correlation   []byte
}

// ErrNotMine is a handler's answer to a message its filter matched but
// another handler takes (the store handler's locky/down/# and the
// controller's locky/down/commands): the message does not count as handled
// by it.
var ErrNotMine = errors.New("this topic is another handler's")

// CheckResponseTopic reports whether topic may receive an MQTT 5 response.
// The gateway publishes responses as itself, past the broker's ACLs, so a
// response topic must not be one of the contract's own (locky/…), a $SYS
// topic or a filter: otherwise a client allowed only on the screen topics
// could make the gateway publish on a door's or the back-end's topic.
func CheckResponseTopic(topic string) error {
	switch {
	case topic == "" || len(topic) > 256:
		return fmt.Errorf("response topic must be 1 to 256 bytes: %w", ErrBadTopic)
	case strings.ContainsAny(topic, "+#\x00"):
		return fmt.Errorf("response topic %q has a wildcard: %w", topic, ErrBadTopic)
	case strings.HasPrefix(topic, "$"), topic == "locky", strings.HasPrefix(topic, "locky/"):
		return fmt.Errorf("response topic %q is reserved; use one outside locky/, e.g. kiosk/replies/<id>: %w", topic, ErrBadTopic)
	}
	return nil
}
