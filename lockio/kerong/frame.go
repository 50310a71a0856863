package kerong

import "errors"

// Frame bytes of the XOR lock-board protocol (see doc.go for the documents).
// Every frame starts with a command byte and ends with the XOR of all the
// bytes before it.
const (
	cmdUnlock = 0x8A // unlock one lock: 8A board lock 11 xor; reply 8A board lock status xor
	cmdQuery  = 0x80 // read all lock states: 80 board 00 33 xor; reply 80 board s… 33 xor
	fnUnlock  = 0x11 // function byte of an unlock request
	fnQuery   = 0x33 // function byte of a read-all request and its reply

	requestLen = 5 // every request, and an unlock reply
	// maxStatusBytes is the largest status field of a read-all reply: 50
	// channels, the largest board ADR-0058 names, need 7 bytes.
	maxStatusBytes = 7
)

// Frame is a decoded reply from a board.
type Frame struct {
	Cmd   byte // cmdUnlock or cmdQuery
	Board byte
	// Lock is the channel of an unlock reply; zero in a read-all reply.
	Lock byte
	// Status is the lock status byte of an unlock reply, or the status
	// bytes of a read-all reply, highest group of eight channels first.
	Status []byte
}

// Decoder errors.
var (
	// errShort is returned by decodeFrame while the bytes seen so far could
	// still become a frame: read more and call again.
	errShort = errors.New("kerong: incomplete frame")
	// errChecksum is returned by decodeFrame for a frame-shaped sequence
	// whose last byte is not the XOR of the others.
	errChecksum = errors.New("kerong: frame checksum mismatch")
)

// xorSum is the protocol's checksum: the XOR of every byte of b.
func xorSum(b []byte) byte {
	var x byte
	for _, c := range b {
		x ^= c
	}
	return x
}

// encodeUnlock returns the request that pulses lock channel lock (1-based)
// of the board at address board.
func encodeUnlock(board, lock byte) []byte {
	f := []byte{cmdUnlock, board, lock, fnUnlock, 0}
	f[4] = xorSum(f[:4])
	return f
}

// encodeQuery returns the request that reads every lock state of a board.
func encodeQuery(board byte) []byte {
	f := []byte{cmdQuery, board, 0x00, fnQuery, 0}
	f[4] = xorSum(f[:4])
	return f
}

// statusBytes is the number of status bytes in a read-all reply of a board
// with the given number of channels.
func statusBytes(channels int) int { return (channels + 7) / 8 }

// decodeFrame finds the first reply frame in b. A read-all reply is taken
// to carry n status bytes (statusBytes of the board asked; 1..maxStatusBytes).
//
// It returns the frame and the number of bytes of b used up: bytes that
// cannot start a frame are skipped, so the decoder resynchronises on
// garbage. With errShort, skip is the garbage before a possible frame
// start; call again with more bytes. With errChecksum, skip covers only the
// first byte of the bad frame so that a real frame starting inside it is
// still found. It never panics, whatever b and n are.
func decodeFrame(b []byte, n int) (f Frame, skip int, err error) {
	if n < 1 || n > maxStatusBytes {
		n = 1
	}
	for skip < len(b) {
		rest := b[skip:]
		var size int
		switch rest[0] {
		case cmdUnlock:
			size = requestLen
		case cmdQuery:
			size = 2 + n + 2
		default:
			skip++
			continue
		}
		if len(rest) < size {
			return Frame{}, skip, errShort
		}
		frame := rest[:size]
		if rest[0] == cmdQuery && frame[size-2] != fnQuery {
			skip++ // not a read-all reply of this length: keep looking
			continue
		}
		if xorSum(frame[:size-1]) != frame[size-1] {
			return Frame{}, skip + 1, errChecksum
		}
		f = Frame{Cmd: frame[0], Board: frame[1]}
		if frame[0] == cmdUnlock {
			f.Lock = frame[2]
			f.Status = []byte{frame[3]}
		} else {
			f.Status = append([]byte(nil), frame[2:2+n]...)
		}
		return f, skip + size, nil
	}
	return Frame{}, skip, errShort
}

// bit reports the status bit of lock channel ch (1-based) in the status
// bytes of a read-all reply; ok is false when the reply does not carry it.
func bit(status []byte, ch int) (set, ok bool) {
	if ch < 1 {
		return false, false
	}
	g := (ch - 1) / 8
	i := len(status) - 1 - g
	if i < 0 {
		return false, false
	}
	return status[i]&(1<<uint((ch-1)%8)) != 0, true
}
