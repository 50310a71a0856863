package kerongtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Socat is a pty pair made by socat, standing in for an RS485 adapter and
// its bus: the driver opens A, the emulator B. Stopping socat is pulling
// the adapter out.
type Socat struct {
	t    testing.TB
	A, B string // device paths: links in the directory given to StartSocat
	cmd  *exec.Cmd
}

// StartSocat makes the pty pair, A and B in dir, and stops it when the test
// ends. The test fails, naming the apt package, when socat is missing.
func StartSocat(t testing.TB, dir string) *Socat {
	t.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat not found (%v): the serial tests need it; install the apt package socat: apt-get install socat", err)
	}
	p := &Socat{t: t, A: filepath.Join(dir, "A"), B: filepath.Join(dir, "B")}
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

// Start (re)starts socat on the same paths, as when the adapter is plugged
// back in, and returns once both ptys exist.
func (p *Socat) Start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatal("socat already running; Stop it first")
	}
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
				// Keep draining so that socat never blocks; the copy
				// ends when socat exits, and its error says only that.
				_, _ = io.Copy(io.Discard, stderr)
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
		if err := cmd.Process.Kill(); err != nil {
			p.t.Errorf("cannot kill socat: %v", err)
		}
		p.t.Fatal("socat did not make the ptys within 10s")
	}
	p.cmd = cmd
}

// Stop kills socat: to the driver, the adapter is unplugged. It does
// nothing when socat is not running.
func (p *Socat) Stop() {
	if p.cmd == nil {
		return
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("cannot kill socat: %v", err)
	}
	// Killed: the exit status is the signal, not news.
	if err := p.cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			p.t.Errorf("waiting for socat: %v", err)
		}
	}
	p.cmd = nil
}
