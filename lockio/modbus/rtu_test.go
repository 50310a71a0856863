package modbus

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
)

// scriptedPort answers every write with resp, then reads time out.
type scriptedPort struct {
	resp    []byte
	pending []byte
	written []byte
}

func (p *scriptedPort) Write(b []byte) (int, error) {
	p.written = append(p.written, b...)
	p.pending = append([]byte(nil), p.resp...)
	return len(b), nil
}

func (p *scriptedPort) Read(b []byte) (int, error) {
	if len(p.pending) == 0 {
		return 0, nil // a timeout, as go.bug.st/serial reports it
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}

func (p *scriptedPort) SetReadTimeout(time.Duration) error { return nil }
func (p *scriptedPort) ResetInputBuffer() error            { return nil }
func (p *scriptedPort) Close() error                       { return nil }

var _ port = (*scriptedPort)(nil)

func withCRC(b ...byte) []byte { return binary.LittleEndian.AppendUint16(b, crc16(b)) }

func TestReadInputsResponses(t *testing.T) {
	f := func(resp []byte, want error, wantBits ...bool) {
		t.Helper()
		p := &scriptedPort{resp: resp}
		c := &rtu{p: p, timeout: 20 * time.Millisecond, silence: time.Millisecond}
		bits, err := c.readInputs(1, 0, 3)
		if !errors.Is(err, want) {
			t.Fatalf("readInputs answered % x: got %v; want %v", resp, err, want)
		}
		if want := withCRC(1, 2, 0, 0, 0, 3); string(p.written) != string(want) {
			t.Errorf("request: got % x; want % x", p.written, want)
		}
		if len(bits) != len(wantBits) {
			t.Fatalf("bits: got %v; want %v", bits, wantBits)
		}
		for i := range bits {
			if bits[i] != wantBits[i] {
				t.Errorf("bits: got %v; want %v", bits, wantBits)
			}
		}
	}
	f(withCRC(1, 2, 1, 0b101), nil, true, false, true)
	f(nil, ErrTimeout)
	f(withCRC(1, 2, 1), ErrFrame)                    // cut short
	f(append(withCRC(1, 2, 1, 5)[:4], 0, 0), ErrCRC) // bad CRC
	f(withCRC(2, 2, 1, 5), ErrFrame)                 // another unit
	f(withCRC(1, 3, 1, 5), ErrFrame)                 // another function
	f(withCRC(1, 2, 2, 5, 0), ErrFrame)              // wrong byte count
	// A byte count past the buffer (noise, broken firmware): refused, not a panic.
	f(append([]byte{1, 2, 0xff}, make([]byte, 260)...), ErrFrame)

	p := &scriptedPort{resp: withCRC(1, 0x82, 2)}
	c := &rtu{p: p, timeout: 20 * time.Millisecond, silence: time.Millisecond}
	_, err := c.readInputs(1, 0, 3)
	var ex *ExceptionError
	if !errors.As(err, &ex) || ex.Code != 2 || ex.Function != 2 {
		t.Fatalf("exception response: got %v; want exception 2 to function 2", err)
	}
	if got, want := errorKind(err), "exception"; got != want {
		t.Errorf("errorKind(%v): got %q; want %q", err, got, want)
	}
}

func TestWriteCoilRequest(t *testing.T) {
	f := func(on bool, value uint16) {
		t.Helper()
		req := []byte{7, 5, 0, 3, byte(value >> 8), byte(value)}
		p := &scriptedPort{resp: withCRC(req...)}
		c := &rtu{p: p, timeout: 20 * time.Millisecond, silence: time.Millisecond}
		if err := c.writeCoil(7, 3, on); err != nil {
			t.Fatalf("writeCoil(7, 3, %v): %v", on, err)
		}
		if want := withCRC(req...); string(p.written) != string(want) {
			t.Errorf("request: got % x; want % x", p.written, want)
		}
	}
	f(true, 0xFF00)
	f(false, 0x0000)
}

// brokenPort fails every read, as an unplugged USB adapter does.
type brokenPort struct{ scriptedPort }

func (p *brokenPort) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestUnpluggedIsPortError(t *testing.T) {
	c := &rtu{p: &brokenPort{}, timeout: 20 * time.Millisecond, silence: time.Millisecond}
	err := c.writeCoil(1, 0, true)
	if !errors.Is(err, ErrPort) || errorKind(err) != "unplugged" {
		t.Fatalf("read error: got %v (kind %q); want %v", err, errorKind(err), ErrPort)
	}
}
