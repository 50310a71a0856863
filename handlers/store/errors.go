package store

import "errors"

// Errors returned by the store. Each rejected downstream message is answered with
// the wrapped error's text, which names the entity and the problem.
var (
	// ErrUnknownDoor is returned when a reservation, command or cycle names a door
	// that the locker does not have. Send the door on locky/down/doors first.
	ErrUnknownDoor = errors.New("unknown door")
	// ErrDoorDisabled is returned when a new reservation targets a disabled door.
	ErrDoorDisabled = errors.New("door is disabled")
	// ErrDoorOccupied is returned when a door already holds another active
	// (arriving or stored) reservation: a door holds at most one parcel.
	ErrDoorOccupied = errors.New("door is occupied")
	// ErrUnknownPartner is returned when a reservation or door names a partner
	// that the locker does not have. Send it on locky/down/partners first.
	ErrUnknownPartner = errors.New("unknown partner")
	// ErrPartnerMismatch is returned when a reservation's partner differs from
	// the partner its door is allocated to.
	ErrPartnerMismatch = errors.New("partner mismatch")
	// ErrStatusOwned is returned when the back-end tries to move a reservation's
	// status backwards or past the locker: once a code is used the locker owns it.
	ErrStatusOwned = errors.New("status is owned by the locker")
	// ErrCodeInUse is returned when a code of a reservation is already a live
	// code of another reservation.
	ErrCodeInUse = errors.New("code already in use")
	// ErrNewerFormat is returned by Open for a database of a newer format
	// than FormatVersion: written by a newer release (a rollback met it).
	// Nothing of it was changed; run the newer release again.
	ErrNewerFormat = errors.New("database of a newer format")
	// ErrNotFound is returned when a reservation does not exist.
	ErrNotFound = errors.New("not found")
	// ErrParcelInside is returned when deleting a reservation or a door would
	// forget a parcel that is in the locker.
	ErrParcelInside = errors.New("parcel inside")
	// ErrInUse is returned when deleting a partner that doors are allocated to.
	ErrInUse = errors.New("in use")
	// ErrAuditBroken is wrapped by the *AuditBreakError that VerifyAudit returns
	// when the audit trail is not what the locker wrote: a record edited,
	// moved, inserted or removed, or the chain's state altered.
	ErrAuditBroken = errors.New("the audit trail was tampered with: keep this database as evidence and compare its trail with the door events the back-end received")
)
