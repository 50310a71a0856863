package kerong

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The board emulator answers like the boards the documents describe, and
// shares no code with the driver: its own frame building, its own checksum.
//
//	request  unlock:   8A addr lock 11 chk   reply 8A addr lock st chk
//	request  read all: 80 addr 00   33 chk   reply 80 addr s(hi)…s(lo) 33 chk
//
// chk is the XOR of the bytes before it; a status bit is set while the lock
// is closed; st is 00 once the lock opened, 11 if it stayed closed.

type emuChannel struct {
	open   bool // door open: status bit clear
	jammed bool // unlock accepted, the sensor never changes
}

type emuBoard struct {
	channels []emuChannel // index 0 is channel 1
	silent   bool         // does not answer
	corrupt  bool         // answers with a wrong checksum
}

type emulator struct {
	t *testing.T

	mu     sync.Mutex
	boards map[byte]*emuBoard
	f      *os.File
	done   chan struct{}
	// unlocks receives "board/lock" for every unlock request served.
	unlocks chan string
}

func newEmulator(t *testing.T, boards map[byte]int) *emulator {
	e := &emulator{t: t, boards: map[byte]*emuBoard{}, unlocks: make(chan string, 64)}
	for addr, n := range boards {
		e.boards[addr] = &emuBoard{channels: make([]emuChannel, n)}
	}
	return e
}

func (e *emulator) with(addr byte, fn func(b *emuBoard)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.boards[addr]
	if !ok {
		e.t.Fatalf("emulator has no board %d", addr)
	}
	fn(b)
}

func (e *emulator) setOpen(addr byte, ch int, open bool) {
	e.with(addr, func(b *emuBoard) { b.channels[ch-1].open = open })
}
func (e *emulator) setJammed(addr byte, ch int, j bool) {
	e.with(addr, func(b *emuBoard) { b.channels[ch-1].jammed = j })
}
func (e *emulator) setSilent(addr byte, s bool) { e.with(addr, func(b *emuBoard) { b.silent = s }) }
func (e *emulator) setCorrupt(addr byte, c bool) {
	e.with(addr, func(b *emuBoard) { b.corrupt = c })
}

// attach serves the board side of the bus, path, until detach.
func (e *emulator) attach(path string) {
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

func (e *emulator) detach() {
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

func emuChecksum(b []byte) byte {
	var c byte
	for i := range b {
		c = c ^ b[i]
	}
	return c
}

func (e *emulator) serve(f *os.File) {
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
		if emuChecksum(req[:4]) != req[4] {
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

func (e *emulator) answer(req []byte) []byte {
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
		if !c.jammed {
			c.open = true
		}
		select {
		case e.unlocks <- fmt.Sprintf("%d/%d", req[1], ch):
		default:
			e.t.Errorf("emulator: unlock notice dropped")
		}
		st := byte(0x11)
		if c.open {
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
	default:
		return nil
	}
	sum := emuChecksum(out)
	if b.corrupt {
		sum = ^sum
	}
	return append(out, sum)
}

// socatPair is a pty pair made by socat: the driver opens A, the emulator B.
type socatPair struct {
	t    *testing.T
	A, B string
	cmd  *exec.Cmd
}

// startSocat makes the pty pair; the test fails, naming the package, when
// socat is missing.
func startSocat(t *testing.T, dir string) *socatPair {
	t.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat not found (%v): the serial tests need it; install the apt package socat: apt-get install socat", err)
	}
	p := &socatPair{t: t, A: filepath.Join(dir, "A"), B: filepath.Join(dir, "B")}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *socatPair) start() {
	p.t.Helper()
	cmd := exec.Command("socat", "-d", "-d",
		"pty,raw,echo=0,link="+p.A, "pty,raw,echo=0,link="+p.B)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("cannot start socat: %v", err)
	}
	// socat logs "starting data transfer loop" once both ptys exist.
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var log bytes.Buffer
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "starting data transfer loop") {
				ready <- nil
				_, _ = io.Copy(io.Discard, stderr) // keep draining so socat never blocks
				return
			}
		}
		ready <- fmt.Errorf("socat exited before the ptys were ready:\n%s", log.String())
	}()
	select {
	case err := <-ready:
		if err != nil {
			p.t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		p.t.Fatal("socat did not make the ptys within 10s")
	}
	p.cmd = cmd
}

// stop kills socat: to the driver, the adapter is unplugged.
func (p *socatPair) stop() {
	if p.cmd == nil {
		return
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("cannot kill socat: %v", err)
	}
	_ = p.cmd.Wait() // killed: the exit status is the signal
	p.cmd = nil
}

// waitCtx is the context of a test step; it bounds a wait so that a broken
// driver fails the test instead of hanging it.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
