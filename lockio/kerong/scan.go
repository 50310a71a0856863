package kerong

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.bug.st/serial"
)

// Scan errors: the reasons in BoardReport.Err. They belong with the other
// sentinels once errors.go is free to edit.
var (
	// ErrNoAnswer is a board address that sent nothing within the response
	// timeout: no board has that DIP address (or the whole bus is dead: A
	// and B swapped, no termination, the boards unpowered).
	ErrNoAnswer = errors.New("kerong: no answer (timeout): no board at this address")
	// ErrBadChecksum is a reply of the right shape whose checksum is wrong:
	// noise on the line, the wiring (A/B, termination, ground) or a wrong
	// baud rate or parity.
	ErrBadChecksum = errors.New("kerong: reply with a bad checksum: a wiring, baud or parity problem")
	// ErrGarbled is an answer that is no reply at all: a wrong baud rate or
	// parity, or two boards with one DIP address talking over each other.
	ErrGarbled = errors.New("kerong: garbled reply: a baud, parity or wiring problem, or two boards with one address")
)

// BoardReport is what one board address answered to a read-all request.
type BoardReport struct {
	Addr int
	// Err is nil when the board answered; otherwise ErrNoAnswer,
	// ErrBadChecksum or ErrGarbled, wrapped.
	Err error
	// Channels is the channel count the reply implies: 8 per status byte
	// (a 16- or 12-channel board both send 2 bytes and read as 16).
	Channels int
	// Set holds the status bit of each channel, channel 1 first: set is
	// closed (locked) on the standard firmware, open where the
	// installation wires the feedback the other way (Door.OpenWhenSet).
	Set []bool
}

// Scan sends a read-all request to each address of addrs in turn, on the
// bus at path with the serial settings bus (zero fields get the bank's
// defaults), and reports what each answered. It returns an error, and the
// reports so far, only when the port cannot be opened or used, or ctx ends.
// A silent address costs bus.ResponseTimeout.
func Scan(ctx context.Context, path string, bus Bus, addrs []int) ([]BoardReport, error) {
	c := Config{Buses: map[string]Bus{path: bus}}
	c.setDefaults()
	bus = c.Buses[path]
	p, err := parity(bus.Parity)
	if err != nil {
		return nil, fmt.Errorf("kerong: bus %s: %w", path, err)
	}
	if bus.Baud <= 0 || bus.ResponseTimeout <= 0 || (bus.StopBits != 1 && bus.StopBits != 2) {
		return nil, fmt.Errorf("kerong: bus %s: baud %d, %d stop bits, timeout %v; use a positive baud and timeout, 1 or 2 stop bits: %w",
			path, bus.Baud, bus.StopBits, bus.ResponseTimeout, ErrConfig)
	}
	for _, a := range addrs {
		if a < 0 || a > MaxBoard {
			return nil, fmt.Errorf("kerong: board address %d; DIP addresses are 0..%d: %w", a, MaxBoard, ErrConfig)
		}
	}
	mode := &serial.Mode{BaudRate: bus.Baud, DataBits: 8, Parity: p, StopBits: serial.OneStopBit}
	if bus.StopBits == 2 {
		mode.StopBits = serial.TwoStopBits
	}
	port, err := serial.Open(path, mode)
	if err != nil {
		return nil, fmt.Errorf("kerong: cannot open %q: %w", path, err)
	}
	// A gap of 20 characters after a complete reply: long enough for the
	// rest of a longer reply to follow, short beside the response timeout.
	gap := max(time.Duration(20*10)*time.Second/time.Duration(bus.Baud), 5*time.Millisecond)
	var out []BoardReport
	for _, a := range addrs {
		if err := ctx.Err(); err != nil {
			return out, errors.Join(err, port.Close())
		}
		r, err := scanOne(port, byte(a), bus.ResponseTimeout, gap)
		if err != nil {
			return out, errors.Join(fmt.Errorf("kerong: %s: %w", path, err), port.Close())
		}
		out = append(out, r)
	}
	if err := port.Close(); err != nil {
		return out, fmt.Errorf("kerong: closing %s: %w", path, err)
	}
	return out, nil
}

// scanOne asks one address for its lock states. The reply's length is not
// known beforehand: a reply is taken once the bytes read end in a valid
// read-all reply of addr, for some number of status bytes, and nothing
// follows within gap. Its error is the port's; a board's is in the report.
func scanOne(p serial.Port, addr byte, timeout, gap time.Duration) (BoardReport, error) {
	r := BoardReport{Addr: int(addr)}
	if err := p.ResetInputBuffer(); err != nil {
		return r, err
	}
	if _, err := p.Write(encodeQuery(addr)); err != nil {
		return r, err
	}
	buf, reply, badSum, err := readReply(p, addr, time.Now().Add(timeout), gap)
	if err != nil {
		return r, err
	}
	switch {
	case reply != nil:
		r.Channels = 8 * len(reply.Status)
		r.Set = make([]bool, r.Channels)
		for ch := 1; ch <= r.Channels; ch++ {
			r.Set[ch-1], _ = bit(reply.Status, ch)
		}
	case len(buf) == 0:
		r.Err = fmt.Errorf("board %d: %w within %v", addr, ErrNoAnswer, timeout)
	case badSum:
		r.Err = fmt.Errorf("board %d: %w (got % x)", addr, ErrBadChecksum, buf)
	default:
		r.Err = fmt.Errorf("board %d: %w (got % x)", addr, ErrGarbled, buf)
	}
	return r, nil
}

// readReply reads until deadline, or until gap passes after the bytes read
// end in a read-all reply of addr. It returns the bytes read, that reply
// (nil: none), and whether a frame with a bad checksum was seen.
func readReply(p serial.Port, addr byte, deadline time.Time, gap time.Duration) ([]byte, *Frame, bool, error) {
	var buf []byte
	rd := make([]byte, 64)
	var reply *Frame
	badSum := false
	for {
		wait := time.Until(deadline)
		if reply != nil {
			wait = gap
		}
		if wait <= 0 {
			break
		}
		if err := p.SetReadTimeout(wait); err != nil {
			return buf, reply, badSum, err
		}
		n, err := p.Read(rd)
		if err != nil {
			return buf, reply, badSum, err
		}
		if n == 0 {
			if reply != nil {
				break // the reply is complete
			}
			continue // the loop checks the deadline
		}
		buf = append(buf, rd[:n]...)
		reply = nil
		for sb := 1; sb <= maxStatusBytes && reply == nil; sb++ {
			f, skip, err := decodeFrame(buf, sb)
			switch {
			case errors.Is(err, errChecksum):
				badSum = true
			case err == nil && skip == len(buf) && f.Cmd == cmdQuery && f.Board == addr:
				reply = &f
			}
		}
	}
	return buf, reply, badSum, nil
}
