package modbus

import (
	"errors"
	"fmt"
)

var (
	// ErrTimeout is returned when a board sends no complete response within
	// Config.Timeout: the board is off, has another unit address or baud
	// rate, or the bus wiring (A/B, termination) is wrong.
	ErrTimeout = errors.New("modbus: no response from the board (timeout)")
	// ErrCRC is returned for a response whose CRC does not match: noise on
	// the bus, two boards with one address, or a wrong parity setting.
	ErrCRC = errors.New("modbus: response with a bad CRC")
	// ErrFrame is returned for a response that is not the answer to the
	// request (wrong unit, function or length).
	ErrFrame = errors.New("modbus: malformed response")
	// ErrPort is returned when the serial adapter cannot be opened, read or
	// written (unplugged, or the device path is wrong); the bus reopens it
	// with back-off.
	ErrPort = errors.New("modbus: serial adapter unavailable")
	// ErrUnknownDoor is returned by Open for a door not in Config.Doors.
	ErrUnknownDoor = errors.New("modbus: door not in the configuration")
	// ErrNotStarted is returned by Open before Start; call Start first.
	ErrNotStarted = errors.New("modbus: bank not started; call Start first")
	// ErrClosed is returned by Open and Start after Close.
	ErrClosed = errors.New("modbus: bank closed")
	// ErrQueueFull is returned by Open when the bus has too many open
	// commands waiting; the command is dropped (the controller reports a
	// door fault).
	ErrQueueFull = errors.New("modbus: open command queue full; command dropped")
	// ErrInvalidConfig wraps every error New returns.
	ErrInvalidConfig = errors.New("modbus: invalid configuration")
)

// ExceptionError is a Modbus exception response from a board.
type ExceptionError struct {
	Function byte // the request's function code
	Code     byte // the exception code
}

func (e *ExceptionError) Error() string {
	return fmt.Sprintf("modbus exception %d (%s) to function %d", e.Code, exceptionName(e.Code), e.Function)
}

func exceptionName(code byte) string {
	switch code {
	case 1:
		return "illegal function"
	case 2:
		return "illegal data address"
	case 3:
		return "illegal data value"
	case 4:
		return "server device failure"
	case 5:
		return "acknowledge"
	case 6:
		return "server device busy"
	case 8:
		return "memory parity error"
	case 10:
		return "gateway path unavailable"
	case 11:
		return "gateway target device failed to respond"
	}
	return "unknown exception"
}

// errorKind is the bounded label of the errors metric.
func errorKind(err error) string {
	var ex *ExceptionError
	switch {
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrCRC):
		return "crc"
	case errors.As(err, &ex):
		return "exception"
	case errors.Is(err, ErrPort):
		return "unplugged"
	}
	return "frame"
}
