package modbus

import (
	"context"
	"errors"
	"fmt"
)

// UnitReport is what one unit address answered during Scan.
type UnitReport struct {
	Unit int
	// Err is nil when the unit answered with its discrete inputs. Otherwise
	// it wraps ErrTimeout (no board with this address), ErrCRC or ErrFrame
	// (wiring, baud or parity), or is an *ExceptionError (the board
	// answers, but has none of the inputs asked: not an input board?).
	Err error
	// Inputs are the discrete inputs read, from protocol address 0: the
	// first of 8, 4, 2 or 1 inputs that the board did not refuse.
	Inputs []bool
}

// Scan reads the discrete inputs of each unit of units in turn, on the bus
// device with the serial settings of cfg (Baud, Parity, StopBits, Timeout,
// FrameSilence; zero fields get the defaults, Doors is not used), and
// reports what each answered. It returns an error, and the reports so far,
// only when the port cannot be opened or used, or ctx ends. A silent unit
// costs cfg.Timeout: a sweep of all 247 addresses at 300 ms takes 74 s.
func Scan(ctx context.Context, device string, cfg Config, units []int) ([]UnitReport, error) {
	cfg.setDefaults()
	switch {
	case cfg.Baud <= 0:
		return nil, fmt.Errorf("%w: baud %d must be positive", ErrInvalidConfig, cfg.Baud)
	case cfg.Parity != ParityNone && cfg.Parity != ParityEven && cfg.Parity != ParityOdd:
		return nil, fmt.Errorf("%w: parity %q; use N, E or O", ErrInvalidConfig, cfg.Parity)
	case cfg.StopBits != 1 && cfg.StopBits != 2:
		return nil, fmt.Errorf("%w: %d stop bits; use 1 or 2", ErrInvalidConfig, cfg.StopBits)
	case cfg.Timeout < 0 || cfg.FrameSilence < 0:
		return nil, fmt.Errorf("%w: negative timeout or frame silence", ErrInvalidConfig)
	}
	for _, u := range units {
		if u < 1 || u > 247 {
			return nil, fmt.Errorf("%w: unit address %d; board addresses are 1..247", ErrInvalidConfig, u)
		}
	}
	p, err := openSerial(device, &cfg)
	if err != nil {
		return nil, err
	}
	c := &rtu{p: p, timeout: cfg.Timeout, silence: cfg.FrameSilence}
	var out []UnitReport
	for _, u := range units {
		if err := ctx.Err(); err != nil {
			return out, errors.Join(err, p.Close())
		}
		r := UnitReport{Unit: u}
		// 8 inputs (a Waveshare relay board's), then fewer while the
		// board answers "illegal data address".
		for _, n := range []uint16{8, 4, 2, 1} {
			r.Inputs, r.Err = c.readInputs(byte(u), 0, n)
			var ex *ExceptionError
			if !errors.As(r.Err, &ex) || ex.Code != 2 {
				break
			}
		}
		if errors.Is(r.Err, ErrPort) {
			return out, errors.Join(r.Err, p.Close())
		}
		out = append(out, r)
	}
	if err := p.Close(); err != nil {
		return out, fmt.Errorf("%w: closing %s: %w", ErrPort, device, err)
	}
	return out, nil
}
