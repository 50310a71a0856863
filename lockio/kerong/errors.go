package kerong

import "errors"

var (
	// ErrConfig is returned by New for a configuration it refuses; the
	// wrapping error names the door or bus and what to set.
	ErrConfig = errors.New("invalid kerong configuration")
	// ErrUnknownDoor is returned by Open for a door the configuration does
	// not map.
	ErrUnknownDoor = errors.New("door not mapped to a kerong lock")
	// ErrNotStarted is returned by Open before Start or after Close.
	ErrNotStarted = errors.New("kerong bank not started; call Start")
	// ErrBusDown is returned by Open while the door's adapter cannot be
	// opened (unplugged); the door is reported as a fault meanwhile.
	ErrBusDown = errors.New("kerong bus adapter unavailable; the door reports a fault until it is back")
	// ErrQueueFull is returned by Open when too many open commands wait
	// for the door's bus.
	ErrQueueFull = errors.New("kerong open queue full; retry")
)
