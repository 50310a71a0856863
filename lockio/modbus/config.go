package modbus

import (
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/locky-edge/locky/handlers/contract"
)

// Polarity says which sensor input level means the door is open.
type Polarity int

const (
	// OpenWhen1 is a door that is open while its discrete input reads 1
	// (the zero value).
	OpenWhen1 Polarity = iota
	// OpenWhen0 is a door that is open while its discrete input reads 0
	// (a normally-closed contact that opens with the door).
	OpenWhen0
)

// OccupancyPolarity says which occupancy input level means a parcel is in
// the door.
type OccupancyPolarity int

const (
	// OccupiedWhen1 is a door occupied while its occupancy input reads 1
	// (the zero value).
	OccupiedWhen1 OccupancyPolarity = iota
	// OccupiedWhen0 is a door occupied while its occupancy input reads 0
	// (an infrared barrier whose output drops when a parcel breaks it).
	OccupiedWhen0
)

// Parity of the serial line.
type Parity string

const (
	ParityNone Parity = "N"
	ParityEven Parity = "E"
	ParityOdd  Parity = "O"
)

// Door ties one door to its lock coil, its sensor input and, optionally, its
// occupancy input.
type Door struct {
	Door   int    // door number, 1..contract.MaxDoor; required
	Device string // serial device of the bus, e.g. /dev/ttyUSB0; required
	Unit   int    // board (slave) address, 1..247; required
	Coil   uint16 // protocol address (from 0) of the coil that pulses the lock
	Input  uint16 // protocol address (from 0) of the discrete input of the door sensor
	// Polarity of the sensor; the zero value is OpenWhen1.
	Polarity Polarity
	// Occupancy is the protocol address (from 0) of the discrete input of
	// the door's occupancy (infrared) sensor, on the same unit and read in
	// the same request as the door sensors; nil means the door has none and
	// its states leave contract.DoorState.Occupied nil. With it, every
	// state read from the board carries Occupied, and a change of
	// occupancy alone is reported; a fault or unknown state carries none
	// (the board was not read).
	Occupancy *uint16
	// OccupancyPolarity of the occupancy input; the zero value is
	// OccupiedWhen1. Only with Occupancy.
	OccupancyPolarity OccupancyPolarity
}

// Config configures a Bank. Serial settings apply to every bus.
type Config struct {
	Doors []Door // required, at least one

	// Baud is the serial bit rate; 0 means 9600 (the boards' factory setting).
	Baud int
	// Parity; "" means ParityNone (8N1, the Waveshare factory setting; the
	// Modbus serial-line spec's default is 8E1 — set ParityEven for boards
	// that follow it).
	Parity Parity
	// StopBits is 1 or 2; 0 means 1.
	StopBits int
	// Timeout is how long a board may take to send a complete response; 0
	// means 300 ms.
	Timeout time.Duration
	// FrameSilence is the silent interval kept before each request (t3.5);
	// 0 means 3.5 character times of 11 bits at Baud, or 1.75 ms above
	// 19200 baud (Modbus over Serial Line V1.02, §2.5.1.1).
	FrameSilence time.Duration

	// PulseLength is how long a lock coil stays on; 0 means 500 ms.
	PulseLength time.Duration
	// OpenWait is how long an open command may wait for its bus (adapter
	// unplugged, a board down) before it is dropped rather than sent: a door
	// popping open after the controller gave up on it is worse than none.
	// Keep it well below the controller's door timeout; 0 means 2.5 s.
	OpenWait time.Duration
	// PollInterval is the time from the start of one poll cycle (every
	// board of a bus read once) to the next; 0 means 200 ms.
	PollInterval time.Duration
	// RetryMin and RetryMax bound the back-off of an unreachable board or
	// adapter, doubling from RetryMin; 0 means 500 ms and 10 s.
	RetryMin, RetryMax time.Duration
	// FaultAfter is how many exchanges with a board must fail in a row
	// (timeout, CRC, malformed reply, exception) before its doors turn
	// `fault`: one reply lost to noise is retried on the next poll instead
	// of raising a door fault. 0 means 2; 1 faults at the first failure.
	FaultAfter int
	// JamTimeout is how long after an accepted pulse the door sensor may
	// keep its reading before the door turns `fault` with reason
	// "jammed"; 0 means 3 s. Keep it below the controller's door timeout,
	// so that the screen says door_fault once, from this.
	JamTimeout time.Duration

	Metrics *metrics.Set // nil means a private set
	Logger  *slog.Logger // nil means slog.Default()
}

func (cfg *Config) setDefaults() {
	if cfg.Baud == 0 {
		cfg.Baud = 9600
	}
	if cfg.Parity == "" {
		cfg.Parity = ParityNone
	}
	if cfg.StopBits == 0 {
		cfg.StopBits = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 300 * time.Millisecond
	}
	if cfg.FrameSilence == 0 {
		cfg.FrameSilence = frameSilence(cfg.Baud)
	}
	if cfg.PulseLength == 0 {
		cfg.PulseLength = 500 * time.Millisecond
	}
	if cfg.OpenWait == 0 {
		cfg.OpenWait = 2500 * time.Millisecond
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 10 * time.Second
	}
	if cfg.FaultAfter == 0 {
		cfg.FaultAfter = 2
	}
	if cfg.JamTimeout == 0 {
		cfg.JamTimeout = 3 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
}

// frameSilence is t3.5 at baud: 3.5 characters of 11 bits (start, 8 data,
// parity or second stop, stop), fixed at 1750 µs above 19200 baud.
func frameSilence(baud int) time.Duration {
	if baud > 19200 {
		return 1750 * time.Microsecond
	}
	return time.Duration(35*11) * time.Second / time.Duration(10*baud)
}

// point is one coil or input of one board.
type point struct {
	device string
	unit   int
	addr   uint16
}

// invalid is an ErrInvalidConfig error with what to fix.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

func (cfg *Config) validate() error {
	if len(cfg.Doors) == 0 {
		return invalid("no doors; list each door with its device, unit, coil and input")
	}
	if err := cfg.validateSerial(); err != nil {
		return err
	}
	inputs, err := cfg.validateDoors()
	if err != nil {
		return err
	}
	if err := cfg.validateOccupancy(inputs); err != nil {
		return err
	}
	return cfg.validateSpans()
}

// validateSerial checks the serial settings and durations.
func (cfg *Config) validateSerial() error {
	switch {
	case cfg.Baud < 0:
		return invalid("baud %d is negative", cfg.Baud)
	case cfg.Parity != ParityNone && cfg.Parity != ParityEven && cfg.Parity != ParityOdd:
		return invalid("parity %q; use N, E or O", cfg.Parity)
	case cfg.StopBits != 1 && cfg.StopBits != 2:
		return invalid("%d stop bits; use 1 or 2", cfg.StopBits)
	case cfg.Timeout < 0 || cfg.FrameSilence < 0 || cfg.PulseLength < 0 || cfg.PollInterval < 0 || cfg.RetryMin < 0 || cfg.RetryMax < 0 || cfg.JamTimeout < 0:
		return invalid("negative duration (timeout, frame silence, pulse, poll interval, retry or jam timeout)")
	case cfg.FaultAfter < 0:
		return invalid("FaultAfter %d is negative; 1 faults a board at its first failed exchange", cfg.FaultAfter)
	case cfg.RetryMax < cfg.RetryMin:
		return invalid("RetryMax %v is below RetryMin %v", cfg.RetryMax, cfg.RetryMin)
	}
	return nil
}

// validateDoors checks each door and that no coil or sensor input is two
// doors'; it returns the sensor inputs, by door.
func (cfg *Config) validateDoors() (map[point]int, error) {
	doors := map[int]bool{}
	coils := map[point]int{}
	inputs := map[point]int{}
	for _, d := range cfg.Doors {
		if err := d.validate(doors[d.Door]); err != nil {
			return nil, err
		}
		doors[d.Door] = true
		c := point{d.Device, d.Unit, d.Coil}
		if other, ok := coils[c]; ok {
			return nil, invalid("door %d: coil %d of unit %d on %s is already door %d's", d.Door, d.Coil, d.Unit, d.Device, other)
		}
		coils[c] = d.Door
		in := point{d.Device, d.Unit, d.Input}
		if other, ok := inputs[in]; ok {
			return nil, invalid("door %d: input %d of unit %d on %s is already door %d's", d.Door, d.Input, d.Unit, d.Device, other)
		}
		inputs[in] = d.Door
	}
	return inputs, nil
}

// validate checks one door's fields; listed says the door number was seen
// before.
func (d Door) validate(listed bool) error {
	switch {
	case d.Door < 1 || d.Door > contract.MaxDoor:
		return invalid("door %d: door numbers are 1..%d", d.Door, contract.MaxDoor)
	case listed:
		return invalid("door %d: listed twice", d.Door)
	case d.Device == "":
		return invalid("door %d: no device; set the serial device of its bus (e.g. /dev/ttyUSB0)", d.Door)
	case d.Unit < 1 || d.Unit > 247:
		return invalid("door %d: unit address %d; board addresses are 1..247", d.Door, d.Unit)
	case d.Polarity != OpenWhen1 && d.Polarity != OpenWhen0:
		return invalid("door %d: unknown sensor polarity %d", d.Door, d.Polarity)
	case d.OccupancyPolarity != OccupiedWhen1 && d.OccupancyPolarity != OccupiedWhen0:
		return invalid("door %d: unknown occupancy polarity %d", d.Door, d.OccupancyPolarity)
	case d.Occupancy == nil && d.OccupancyPolarity != OccupiedWhen1:
		return invalid("door %d: an occupancy polarity without an occupancy input; set Occupancy, or leave the polarity out", d.Door)
	}
	return nil
}

// validateOccupancy checks the occupancy inputs after every sensor input is
// known, so that a collision is found whichever door is listed first.
func (cfg *Config) validateOccupancy(inputs map[point]int) error {
	occupancy := map[point]int{}
	for _, d := range cfg.Doors {
		if d.Occupancy == nil {
			continue
		}
		in := point{d.Device, d.Unit, *d.Occupancy}
		if other, ok := inputs[in]; ok {
			return invalid("door %d: occupancy input %d of unit %d on %s is door %d's sensor input; give the occupancy sensor an input of its own", d.Door, in.addr, d.Unit, d.Device, other)
		}
		if other, ok := occupancy[in]; ok {
			return invalid("door %d: occupancy input %d of unit %d on %s is already door %d's", d.Door, in.addr, d.Unit, d.Device, other)
		}
		occupancy[in] = d.Door
	}
	return nil
}

// validateSpans checks that one request can read a board's inputs, sensor
// and occupancy, from the lowest to the highest.
func (cfg *Config) validateSpans() error {
	span := map[point][2]uint16{}
	for _, d := range cfg.Doors {
		k := point{d.Device, d.Unit, 0}
		lo, hi := d.inputSpan()
		s, ok := span[k]
		if !ok {
			s = [2]uint16{lo, hi}
		}
		s[0], s[1] = min(s[0], lo), max(s[1], hi)
		span[k] = s
	}
	keys := make([]point, 0, len(span))
	for k := range span {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].device < keys[j].device || keys[i].device == keys[j].device && keys[i].unit < keys[j].unit
	})
	for _, k := range keys {
		if s := span[k]; int(s[1])-int(s[0])+1 > maxInputs {
			return invalid("unit %d on %s: inputs (sensor and occupancy) %d..%d span more than %d, the most one request reads", k.unit, k.device, s[0], s[1], maxInputs)
		}
	}
	return nil
}

// inputSpan is the lowest and the highest of the door's inputs.
func (d Door) inputSpan() (lo, hi uint16) {
	lo, hi = d.Input, d.Input
	if d.Occupancy != nil {
		lo, hi = min(lo, *d.Occupancy), max(hi, *d.Occupancy)
	}
	return lo, hi
}
