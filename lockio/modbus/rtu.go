package modbus

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"go.bug.st/serial"
)

const (
	fcReadDiscreteInputs = 0x02
	fcWriteSingleCoil    = 0x05
	maxInputs            = 2000 // the most discrete inputs one request reads
	maxADU               = 256
)

// port is what the RTU client needs of a serial port (go.bug.st/serial.Port).
type port interface {
	io.ReadWriter
	SetReadTimeout(t time.Duration) error
	ResetInputBuffer() error
	Close() error
}

func openSerial(device string, cfg *Config) (port, error) {
	mode := &serial.Mode{BaudRate: cfg.Baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit}
	switch cfg.Parity {
	case ParityEven:
		mode.Parity = serial.EvenParity
	case ParityOdd:
		mode.Parity = serial.OddParity
	}
	if cfg.StopBits == 2 {
		mode.StopBits = serial.TwoStopBits
	}
	p, err := serial.Open(device, mode)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open %q: %w", ErrPort, device, err)
	}
	return p, nil
}

// rtu is a Modbus RTU client on one serial port. It is not safe for
// concurrent use: the bus goroutine owns it.
type rtu struct {
	p       port
	timeout time.Duration
	silence time.Duration
	last    time.Time // end of the last activity on the line
	buf     [maxADU]byte
}

// writeCoil sets one coil on or off (function 05).
func (c *rtu) writeCoil(unit byte, addr uint16, on bool) error {
	var v uint16
	if on {
		v = 0xFF00
	}
	req := []byte{unit, fcWriteSingleCoil, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[2:], addr)
	binary.BigEndian.PutUint16(req[4:], v)
	resp, err := c.transact(req)
	if err != nil {
		return err
	}
	if len(resp) != 6 || string(resp[2:6]) != string(req[2:6]) {
		return fmt.Errorf("%w: write coil answered % x", ErrFrame, resp)
	}
	return nil
}

// readInputs reads count discrete inputs from first (function 02); bit i of
// the result is input first+i.
func (c *rtu) readInputs(unit byte, first, count uint16) ([]bool, error) {
	req := []byte{unit, fcReadDiscreteInputs, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[2:], first)
	binary.BigEndian.PutUint16(req[4:], count)
	resp, err := c.transact(req)
	if err != nil {
		return nil, err
	}
	n := int(count+7) / 8
	if len(resp) != 3+n || int(resp[2]) != n {
		return nil, fmt.Errorf("%w: %d inputs answered with %d bytes", ErrFrame, count, len(resp))
	}
	bits := make([]bool, count)
	for i := range bits {
		bits[i] = resp[3+i/8]&(1<<(i%8)) != 0
	}
	return bits, nil
}

// transact sends req (unit, function, data) with its CRC after the
// inter-frame silence and returns the response without its CRC.
func (c *rtu) transact(req []byte) ([]byte, error) {
	if wait := time.Until(c.last.Add(c.silence)); wait > 0 {
		time.Sleep(wait)
	}
	// Whatever is in the input buffer now is the tail of an earlier,
	// abandoned response; it must not be taken for this one's.
	if err := c.p.ResetInputBuffer(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPort, err)
	}
	adu := binary.LittleEndian.AppendUint16(append(c.buf[:0:0], req...), crc16(req))
	if _, err := c.p.Write(adu); err != nil {
		return nil, fmt.Errorf("%w: write: %w", ErrPort, err)
	}
	defer func() { c.last = time.Now() }()
	deadline := time.Now().Add(c.timeout + c.charTimes(len(adu)))

	// unit, function, then a byte count (02), the rest of an echo (05) or
	// an exception code.
	got, err := c.readFull(c.buf[:3], 0, deadline)
	if err != nil {
		if got > 0 && err == ErrTimeout {
			return nil, fmt.Errorf("%w: %d bytes then silence", ErrFrame, got)
		}
		return nil, err
	}
	var total int
	switch fn := c.buf[1]; {
	case c.buf[0] != req[0]:
		return nil, fmt.Errorf("%w: answer from unit %d to a request to unit %d", ErrFrame, c.buf[0], req[0])
	case fn == req[1]|0x80:
		total = 5
	case fn != req[1]:
		return nil, fmt.Errorf("%w: function %d answered with function %d", ErrFrame, req[1], fn)
	case fn == fcReadDiscreteInputs:
		// The byte count is the board's word: check it against what was
		// asked before reading that much (a count of 252 would run past
		// the buffer).
		want := (int(binary.BigEndian.Uint16(req[4:])) + 7) / 8
		if int(c.buf[2]) != want {
			return nil, fmt.Errorf("%w: %d bytes of inputs announced for %d asked", ErrFrame, c.buf[2], want)
		}
		total = 3 + want + 2
	default:
		total = 8
	}
	if _, err := c.readFull(c.buf[:total], 3, deadline); err != nil {
		if err == ErrTimeout {
			return nil, fmt.Errorf("%w: response cut short", ErrFrame)
		}
		return nil, err
	}
	frame := c.buf[:total]
	if binary.LittleEndian.Uint16(frame[total-2:]) != crc16(frame[:total-2]) {
		return nil, ErrCRC
	}
	if frame[1]&0x80 != 0 {
		return nil, &ExceptionError{Function: req[1], Code: frame[2]}
	}
	return append([]byte(nil), frame[:total-2]...), nil
}

// readFull fills buf from offset have until the deadline; it returns how
// many bytes it holds and ErrTimeout when the deadline passed first.
func (c *rtu) readFull(buf []byte, have int, deadline time.Time) (int, error) {
	for have < len(buf) {
		left := time.Until(deadline)
		if left <= 0 {
			return have, ErrTimeout
		}
		if err := c.p.SetReadTimeout(left); err != nil {
			return have, fmt.Errorf("%w: %w", ErrPort, err)
		}
		n, err := c.p.Read(buf[have:])
		if err != nil {
			return have, fmt.Errorf("%w: read: %w", ErrPort, err)
		}
		have += n // n == 0: the read timed out; the loop checks the deadline
	}
	return have, nil
}

// charTimes is how long n characters of 11 bits take on the line.
func (c *rtu) charTimes(n int) time.Duration {
	return c.silence * time.Duration(n) * 10 / 35
}

// crc16 is the Modbus CRC (polynomial 0xA001 reflected, initial 0xFFFF),
// sent low byte first.
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, x := range b {
		crc ^= uint16(x)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}
