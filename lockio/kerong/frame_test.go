package kerong

import (
	"bytes"
	"errors"
	"testing"
)

// The request bytes are the examples the documents give.
func TestEncode(t *testing.T) {
	f := func(got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Fatalf("got % X; want % X", got, want)
		}
	}
	f(encodeQuery(1), []byte{0x80, 0x01, 0x00, 0x33, 0xB2})
	f(encodeUnlock(1, 0), []byte{0x8A, 0x01, 0x00, 0x11, 0x9A})
	f(encodeUnlock(1, 1), []byte{0x8A, 0x01, 0x01, 0x11, 0x9B})
}

func TestDecodeFrame(t *testing.T) {
	f := func(in []byte, n int, wantErr error, wantSkip int, wantStatus []byte) {
		t.Helper()
		fr, skip, err := decodeFrame(in, n)
		if !errors.Is(err, wantErr) || skip != wantSkip {
			t.Fatalf("decodeFrame(% X): got skip %d, err %v; want skip %d, err %v", in, skip, err, wantSkip, wantErr)
		}
		if err == nil && !bytes.Equal(fr.Status, wantStatus) {
			t.Fatalf("decodeFrame(% X): got status % X; want % X", in, fr.Status, wantStatus)
		}
	}
	// The documents' read-all reply of a 24-channel board.
	f([]byte{0x80, 0x01, 0x01, 0x01, 0x01, 0x33, 0xB3}, 3, nil, 7, []byte{1, 1, 1})
	f([]byte{0xFF, 0x00, 0x80, 0x01, 0x01, 0x01, 0x01, 0x33, 0xB3}, 3, nil, 9, []byte{1, 1, 1})
	f([]byte{0x80, 0x01, 0x01}, 3, errShort, 0, nil)
	f([]byte{0x12, 0x34}, 3, errShort, 2, nil)
	f([]byte{0x80, 0x01, 0x01, 0x01, 0x01, 0x33, 0x00}, 3, errChecksum, 1, nil)
	f([]byte{0x8A, 0x01, 0x01, 0x00, 0x8A}, 3, nil, 5, []byte{0x00})
	// A checksum failure inside garbage does not hide the real frame after it.
	in := []byte{0x8A, 0x8A, 0x01, 0x02, 0x00, 0x89}
	if _, skip, err := decodeFrame(in, 1); !errors.Is(err, errChecksum) || skip != 1 {
		t.Fatalf("got %d, %v; want 1, checksum", skip, err)
	}
	f(in[1:], 1, nil, 5, []byte{0x00})
}

func TestBit(t *testing.T) {
	status := []byte{0x80, 0x00, 0x01} // channel 24 and channel 1 set
	f := func(ch int, want, wantOK bool) {
		t.Helper()
		got, ok := bit(status, ch)
		if got != want || ok != wantOK {
			t.Fatalf("bit(%d): got %v, %v; want %v, %v", ch, got, ok, want, wantOK)
		}
	}
	f(1, true, true)
	f(2, false, true)
	f(24, true, true)
	f(23, false, true)
	f(25, false, false)
	f(0, false, false)
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte{0x80, 0x01, 0x01, 0x01, 0x01, 0x33, 0xB3}, 3)
	f.Add([]byte{0x8A, 0x01, 0x01, 0x00, 0x8A}, 1)
	f.Add([]byte{0x00, 0x80, 0x80, 0x33}, 6)
	f.Add([]byte{}, -1)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		rest := b
		for len(rest) > 0 {
			fr, skip, err := decodeFrame(rest, n)
			if skip < 0 || skip > len(rest) {
				t.Fatalf("skip %d out of 0..%d", skip, len(rest))
			}
			if err == nil {
				if skip == 0 || (fr.Cmd != cmdUnlock && fr.Cmd != cmdQuery) || len(fr.Status) == 0 {
					t.Fatalf("bad frame %+v, skip %d", fr, skip)
				}
			}
			if errors.Is(err, errShort) {
				if skip == 0 {
					break
				}
			}
			if skip == 0 {
				t.Fatalf("no progress on % X", rest)
			}
			rest = rest[skip:]
		}
	})
}
