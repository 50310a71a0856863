package kerong

import (
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Config configures a Bank: which door is which lock channel of which board
// on which bus, and how the buses are driven.
type Config struct {
	// Doors maps each door number (1..contract.MaxDoor) to its lock.
	// Required.
	Doors map[int]Door
	// Buses holds the serial settings of each bus, by device path. A bus a
	// door names but this map does not gets the defaults.
	Buses map[string]Bus
	// PollInterval is the pause between two poll cycles of a bus (one
	// read-all request to every board). Zero means 200 ms.
	PollInterval time.Duration
	// MaxBackoff caps the retry delay of an unreachable board and of an
	// adapter that cannot be opened; the delay starts at PollInterval and
	// doubles. Zero means 10 s.
	MaxBackoff time.Duration
	// FaultAfter is how many requests to a board must fail in a row
	// (timeout, bad checksum) before its doors turn fault: one reply lost
	// to noise is retried at the next poll instead of raising a door
	// fault. Zero means 2; 1 faults at the first failure.
	FaultAfter int
	// JamTimeout is how long after an accepted unlock the door sensor may
	// take to show the door open before the door is reported as a fault
	// with reason "jammed". Zero means 3 s.
	JamTimeout time.Duration
	// OpenWait is how long an unlock may wait for its bus (a board timing
	// out before it, the adapter gone) before it is dropped rather than
	// sent: a door popping open after the controller gave up on it is worse
	// than none. Keep it well below the controller's door timeout. Zero
	// means 2.5 s.
	OpenWait time.Duration
	// Metrics receives the bank's metrics. Nil means a private set.
	Metrics *metrics.Set
	// Logger receives the bank's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Door is the lock of one door.
type Door struct {
	// Bus is the serial device of the RS485 adapter, e.g. /dev/ttyUSB0.
	// Required.
	Bus string
	// Board is the board's DIP-switch address, 0..31.
	Board int
	// Lock is the lock channel on the board, 1..Channels.
	Lock int
	// Channels is the number of lock channels of the board, 8..48 (the
	// length of the board's status reply depends on it). Zero means 24.
	// Every door of one board must give the same value (or zero).
	Channels int
	// OpenWhenSet inverts the sensor: a set status bit means the door is
	// open. The zero value reads a set bit as closed (locked), as the
	// documents describe the standard firmware; installations wire the
	// feedback either way (ADR-0058 feedback_type).
	OpenWhenSet bool
}

// Bus is the serial setting of one RS485 bus.
type Bus struct {
	// Baud is the bit rate. Zero means 9600, the documented default of
	// these boards.
	Baud int
	// Parity is "none", "even" or "odd". Empty means "none".
	Parity string
	// StopBits is 1 or 2. Zero means 1.
	StopBits int
	// ResponseTimeout is how long a board may take to answer. Zero means
	// 300 ms.
	ResponseTimeout time.Duration
}

// Limits of the board family.
const (
	MaxBoard        = 31
	MinChannels     = 8
	MaxChannels     = 48
	defaultChannels = 24
	maxDoor         = 9999 // contract.MaxDoor
)

func (c *Config) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.MaxBackoff < c.PollInterval {
		c.MaxBackoff = c.PollInterval
	}
	if c.JamTimeout == 0 {
		c.JamTimeout = 3 * time.Second
	}
	if c.FaultAfter == 0 {
		c.FaultAfter = 2
	}
	if c.OpenWait == 0 {
		c.OpenWait = 2500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	buses := map[string]Bus{}
	for path, b := range c.Buses {
		buses[path] = b
	}
	for _, d := range c.Doors {
		if _, ok := buses[d.Bus]; !ok {
			buses[d.Bus] = Bus{}
		}
	}
	for path, b := range buses {
		if b.Baud == 0 {
			b.Baud = 9600
		}
		if b.Parity == "" {
			b.Parity = "none"
		}
		if b.StopBits == 0 {
			b.StopBits = 1
		}
		if b.ResponseTimeout == 0 {
			b.ResponseTimeout = 300 * time.Millisecond
		}
		buses[path] = b
	}
	c.Buses = buses
}

// validate checks a Config whose defaults are set. Its errors name the door
// or bus at fault and the range to use.
func (c *Config) validate() error {
	if len(c.Doors) == 0 {
		return fmt.Errorf("kerong: no doors configured; map each door to a bus, board and lock: %w", ErrConfig)
	}
	if c.PollInterval < 0 || c.MaxBackoff < 0 || c.JamTimeout < 0 || c.FaultAfter < 0 {
		return fmt.Errorf("kerong: PollInterval, MaxBackoff, JamTimeout and FaultAfter must not be negative: %w", ErrConfig)
	}
	if err := c.validateDoors(); err != nil {
		return err
	}
	return c.validateBuses()
}

type boardKey struct {
	bus   string
	board int
}

// boardSize is a board's channel count and the door that gave it (0: none
// did, the default).
type boardSize struct {
	channels, door int
}

// validateDoors checks each door in number order against its board's
// channels, and that no two doors share a lock.
func (c *Config) validateDoors() error {
	type lockKey struct {
		bus         string
		board, lock int
	}
	sizes, err := c.boardSizes()
	if err != nil {
		return err
	}
	locks := map[lockKey]int{}
	for _, n := range sortedDoors(c.Doors) {
		d := c.Doors[n]
		if err := validateDoor(n, d, sizes[boardKey{d.Bus, d.Board}]); err != nil {
			return err
		}
		lk := lockKey{d.Bus, d.Board, d.Lock}
		if other, ok := locks[lk]; ok {
			return fmt.Errorf("kerong: door %d: lock %d of board %d on %s is already door %d: %w", n, d.Lock, d.Board, d.Bus, other, ErrConfig)
		}
		locks[lk] = n
	}
	return nil
}

// boardSizes is the channel count of every board: the one its doors give
// (they must agree; one door giving it is enough), else the default.
func (c *Config) boardSizes() (map[boardKey]boardSize, error) {
	sizes := map[boardKey]boardSize{}
	for _, n := range sortedDoors(c.Doors) {
		d := c.Doors[n]
		k := boardKey{d.Bus, d.Board}
		prev, ok := sizes[k]
		switch {
		case d.Channels == 0:
			if !ok {
				sizes[k] = boardSize{channels: defaultChannels}
			}
		case d.Channels < MinChannels || d.Channels > MaxChannels:
			return nil, fmt.Errorf("kerong: door %d: %d channels; boards have %d..%d: %w", n, d.Channels, MinChannels, MaxChannels, ErrConfig)
		case ok && prev.door != 0 && prev.channels != d.Channels:
			return nil, fmt.Errorf("kerong: door %d: board %d on %s given %d channels, door %d says %d: %w", n, d.Board, d.Bus, d.Channels, prev.door, prev.channels, ErrConfig)
		default:
			sizes[k] = boardSize{channels: d.Channels, door: n}
		}
	}
	return sizes, nil
}

// validateDoor checks the ranges of door n's fields, its lock against its
// board's size.
func validateDoor(n int, d Door, size boardSize) error {
	if n < 1 || n > maxDoor {
		return fmt.Errorf("kerong: door %d: door numbers are 1..%d: %w", n, maxDoor, ErrConfig)
	}
	if d.Bus == "" {
		return fmt.Errorf("kerong: door %d: no bus; set the serial device of its RS485 adapter: %w", n, ErrConfig)
	}
	if d.Board < 0 || d.Board > MaxBoard {
		return fmt.Errorf("kerong: door %d: board address %d; use the board's DIP address 0..%d: %w", n, d.Board, MaxBoard, ErrConfig)
	}
	if d.Lock >= 1 && d.Lock <= size.channels {
		return nil
	}
	ch := size.channels
	switch {
	case size.door == 0:
		return fmt.Errorf("kerong: door %d: lock channel %d; use 1..%d on a %d-channel board (the default; give the board's channels if it has more): %w", n, d.Lock, ch, ch, ErrConfig)
	case size.door != n:
		return fmt.Errorf("kerong: door %d: lock channel %d; use 1..%d on a %d-channel board (door %d gives board %d %d channels): %w", n, d.Lock, ch, ch, size.door, d.Board, ch, ErrConfig)
	}
	return fmt.Errorf("kerong: door %d: lock channel %d; use 1..%d on a %d-channel board: %w", n, d.Lock, ch, ch, ErrConfig)
}

// validateBuses checks each bus's serial settings.
func (c *Config) validateBuses() error {
	for path, b := range c.Buses {
		if b.Baud <= 0 {
			return fmt.Errorf("kerong: bus %s: baud %d must be positive: %w", path, b.Baud, ErrConfig)
		}
		if _, err := parity(b.Parity); err != nil {
			return fmt.Errorf("kerong: bus %s: %w", path, err)
		}
		if b.StopBits != 1 && b.StopBits != 2 {
			return fmt.Errorf("kerong: bus %s: %d stop bits; use 1 or 2: %w", path, b.StopBits, ErrConfig)
		}
		if b.ResponseTimeout < 0 {
			return fmt.Errorf("kerong: bus %s: negative response timeout: %w", path, ErrConfig)
		}
	}
	return nil
}

func sortedDoors(m map[int]Door) []int {
	out := make([]int, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}
