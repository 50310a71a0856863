package kerongtest

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// WaitLimit bounds the waits of the emulator's Await methods, so that a
// broken driver fails the test instead of hanging it. It is not a timing
// assertion.
const WaitLimit = 20 * time.Second

type channel struct {
	open   bool // door open: status bit clear
	jammed bool // unlock accepted, the sensor never changes
}

type board struct {
	channels []channel // index 0 is channel 1
	silent   bool      // does not answer
	corrupt  bool      // answers with a wrong checksum
	garbled  int       // this many next answers have a wrong checksum
	garbledU int       // this many next unlock answers have a wrong checksum
	reads    int       // read-all requests answered
}

// Emulator plays the lock boards at the far end of a bus. Its methods are
// safe for concurrent use.
type Emulator struct {
	t testing.TB

	mu      sync.Mutex
	boards  map[byte]*board
	manual  bool          // an unlock does not open the door
	changed chan struct{} // closed and replaced on every read-all answered
	f       *os.File
	done    chan struct{}
	unlocks chan string
}

// NewEmulator returns an emulator of the given boards (DIP address →
// number of lock channels), every door closed. It serves nothing until
// Attach.
func NewEmulator(t testing.TB, boards map[byte]int) *Emulator {
	e := &Emulator{t: t, boards: map[byte]*board{}, changed: make(chan struct{}), unlocks: make(chan string, 64)}
	for addr, n := range boards {
		e.boards[addr] = &board{channels: make([]channel, n)}
	}
	return e
}

func (e *Emulator) with(addr byte, fn func(b *board)) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.boards[addr]
	if !ok {
		e.t.Fatalf("emulator has no board %d", addr)
	}
	fn(b)
}

// SetOpen opens or closes the door of lock channel ch (from 1) of board
// addr: a person pulls it open or pushes it shut.
func (e *Emulator) SetOpen(addr byte, ch int, open bool) {
	e.t.Helper()
	e.with(addr, func(b *board) { b.channels[ch-1].open = open })
}

// SetJammed makes the lock of channel ch accept an unlock without the door
// ever opening (reply status 11).
func (e *Emulator) SetJammed(addr byte, ch int, jammed bool) {
	e.t.Helper()
	e.with(addr, func(b *board) { b.channels[ch-1].jammed = jammed })
}

// SetSilent makes board addr answer nothing.
func (e *Emulator) SetSilent(addr byte, silent bool) {
	e.t.Helper()
	e.with(addr, func(b *board) { b.silent = silent })
}

// SetCorrupt makes board addr answer with a wrong checksum.
func (e *Emulator) SetCorrupt(addr byte, corrupt bool) {
	e.t.Helper()
	e.with(addr, func(b *board) { b.corrupt = corrupt })
}

// CorruptNext makes the next n answers of board addr carry a wrong
// checksum, as noise on the bus does.
func (e *Emulator) CorruptNext(addr byte, n int) {
	e.t.Helper()
	e.with(addr, func(b *board) { b.garbled = n })
}

// CorruptNextUnlocks makes the next n answers of board addr to an unlock
// carry a wrong checksum.
func (e *Emulator) CorruptNextUnlocks(addr byte, n int) {
	e.t.Helper()
	e.with(addr, func(b *board) { b.garbledU = n })
}

// SetManualDoors chooses what an accepted unlock does. Off (the default),
// the door opens at once. On, the lock releases (reply status 00) but the
// door stays shut until SetOpen: the test is the person who pulls it open.
func (e *Emulator) SetManualDoors(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.manual = on
}

// AwaitUnlock waits until the emulator has served an unlock of lock
// channel ch of board addr. Unlocks of other locks served meanwhile are
// consumed.
func (e *Emulator) AwaitUnlock(t testing.TB, addr byte, ch int) {
	t.Helper()
	want := fmt.Sprintf("%d/%d", addr, ch)
	deadline := time.After(WaitLimit)
	for {
		select {
		case got := <-e.unlocks:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("emulator: no unlock of lock %d of board %d within %s", ch, addr, WaitLimit)
		}
	}
}

// AwaitReads waits until board addr has answered n more read-all requests
// than when it was called: the driver has seen the board's state since.
func (e *Emulator) AwaitReads(t testing.TB, addr byte, n int) {
	t.Helper()
	var from int
	e.with(addr, func(b *board) { from = b.reads })
	deadline := time.After(WaitLimit)
	for {
		var reads int
		var changed chan struct{}
		e.with(addr, func(b *board) { reads, changed = b.reads, e.changed })
		if reads-from >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("emulator: board %d answered %d read-all requests within %s; want %d", addr, reads-from, WaitLimit, n)
		}
	}
}

// Attach serves the board side of the bus, the device path (one end of a
// pty pair), until Detach.
func (e *Emulator) Attach(path string) {
	e.t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		e.t.Fatalf("emulator cannot open %s: %v", path, err)
	}
	e.mu.Lock()
	e.f, e.done = f, make(chan struct{})
	done := e.done
	e.mu.Unlock()
	go func() {
		defer close(done)
		e.serve(f)
	}()
}

// Detach stops serving and waits for the serving goroutine. It does
// nothing when the emulator is not attached.
func (e *Emulator) Detach() {
	e.mu.Lock()
	f, done := e.f, e.done
	e.f = nil
	e.mu.Unlock()
	if f == nil {
		return
	}
	if err := f.Close(); err != nil {
		e.t.Errorf("emulator close: %v", err)
	}
	<-done
}

func checksum(b []byte) byte {
	var c byte
	for i := range b {
		c = c ^ b[i]
	}
	return c
}

func (e *Emulator) serve(f *os.File) {
	r := bufio.NewReader(f)
	var req []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return // detached or the pty went away
		}
		req = append(req, c)
		// Resynchronise: a request starts with 8A or 80.
		for len(req) > 0 && req[0] != 0x8A && req[0] != 0x80 {
			req = req[1:]
		}
		if len(req) < 5 {
			continue
		}
		if checksum(req[:4]) != req[4] {
			req = req[1:]
			continue
		}
		reply := e.answer(req[:5])
		req = req[5:]
		if reply != nil {
			if _, err := f.Write(reply); err != nil {
				return
			}
		}
	}
}

func (e *Emulator) answer(req []byte) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.boards[req[1]]
	if !ok || b.silent {
		return nil
	}
	var out []byte
	switch {
	case req[0] == 0x8A && req[3] == 0x11:
		ch := int(req[2])
		if ch < 1 || ch > len(b.channels) {
			return nil
		}
		c := &b.channels[ch-1]
		if !c.jammed && !e.manual {
			c.open = true
		}
		select {
		case e.unlocks <- fmt.Sprintf("%d/%d", req[1], ch):
		default:
			e.t.Errorf("emulator: unlock notice dropped")
		}
		st := byte(0x11)
		if !c.jammed {
			st = 0x00
		}
		out = []byte{0x8A, req[1], req[2], st}
	case req[0] == 0x80 && req[3] == 0x33:
		groups := (len(b.channels) + 7) / 8
		status := make([]byte, groups)
		for i, c := range b.channels {
			if !c.open {
				status[groups-1-i/8] |= 1 << (i % 8)
			}
		}
		out = append([]byte{0x80, req[1]}, status...)
		out = append(out, 0x33)
		b.reads++
		close(e.changed)
		e.changed = make(chan struct{})
	default:
		return nil
	}
	sum := checksum(out)
	switch {
	case b.corrupt:
		sum = ^sum
	case b.garbledU > 0 && req[0] == 0x8A:
		sum = ^sum
		b.garbledU--
	case b.garbled > 0:
		sum = ^sum
		b.garbled--
	}
	return append(out, sum)
}
