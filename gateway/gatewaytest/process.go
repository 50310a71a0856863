package gatewaytest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// readyLimit bounds the wait for a process's first ready line: a hang
// guard, generous because a binary built with -race starts slowly on a busy
// machine.
const readyLimit = 2 * WaitLimit

// Build compiles the locky-gateway program with the race detector to bin (to
// a new temporary directory if bin is empty), its Version stamped with
// version unless that is empty, and returns its path.
func Build(t testing.TB, bin, version string) string {
	t.Helper()
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "locky-gateway")
	}
	args := []string{"build", "-race", "-o", bin}
	if version != "" {
		args = append(args, "-ldflags", "-X github.com/locky-edge/locky/gateway.Version="+version)
	}
	out, err := exec.Command("go", append(args, "github.com/locky-edge/locky/gateway/cmd/locky-gateway")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Process is a program running as a child process of the test, most often
// the locky-gateway binary: its stdout and stderr are collected, and its
// JSON log lines (--log-format json) read for "locker ready", its warnings
// and errors, and the race detector's reports. Its exit is seen once its
// output ends: a child of its own that keeps the output open delays it.
type Process struct {
	MQTT, HTTP string // where its first ready line says it serves; set once ready

	cmd     *exec.Cmd
	ready   chan struct{}
	readies chan [2]string
	exited  chan struct{}
	err     error // cmd.Wait's, once exited is closed

	mu       sync.Mutex
	output   strings.Builder
	problems []string
	races    int
}

// Launch starts cmd with its stdout and stderr (which it sets) read by the
// Process, and returns at once. The caller stops it (Stop, Kill).
func Launch(cmd *exec.Cmd) (*Process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cannot make a pipe for the output of %s: %w", cmd.Path, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close() // the child's copy stays open until it exits
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("cannot start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, ready: make(chan struct{}), readies: make(chan [2]string, 16), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.read(sc.Text())
		}
		r.Close()
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// read takes one line of the output.
func (p *Process) read(text string) {
	var line struct {
		Msg, Level, MQTT, HTTP string
	}
	isJSON := json.Unmarshal([]byte(text), &line) == nil
	p.mu.Lock()
	p.output.WriteString(text + "\n")
	if strings.Contains(text, "WARNING: DATA RACE") { // the race detector's report
		p.races++
	}
	if isJSON && (line.Level == "WARN" || line.Level == "ERROR") {
		p.problems = append(p.problems, text)
	}
	p.mu.Unlock()
	if !isJSON || line.Msg != "locker ready" {
		return
	}
	addrs := [2]string{line.MQTT, strings.TrimPrefix(line.HTTP, "http://")}
	select {
	case <-p.ready: // a binary after an upgrade in place: same process
		p.readies <- addrs
	default:
		p.MQTT, p.HTTP = addrs[0], addrs[1]
		close(p.ready)
	}
}

// StartProcess launches cmd, kills it (SIGKILL) when the test ends, and
// returns once it logged that it is ready; it fails the test if it exits
// before, and, when the test ends, if the race detector reported a data race
// in it.
func StartProcess(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := Launch(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if n := p.Races(); n > 0 {
			t.Errorf("%s reported %d data races:\n%s", cmd.Path, n, p.Output())
		}
	})
	select {
	case <-p.ready:
	case <-p.exited:
		t.Fatalf("the gateway exited before it was ready: %v\n%s", p.err, p.Problems())
	case <-time.After(readyLimit): // a hang guard
		t.Fatalf("the gateway is not ready within %s:\n%s", readyLimit, p.Problems())
	}
	return p
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Readies receives the addresses of each ready line after the first: a new
// binary in the same process, after an upgrade in place.
func (p *Process) Readies() <-chan [2]string { return p.readies }

// Exited is closed once the process exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitCode is the process's exit code once Exited is closed (-1 if a
// signal ended it).
func (p *Process) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// Signal sends sig; a process that already exited is not an error.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("cannot signal %s: %w", p.cmd.Path, err)
	}
	return nil
}

// Stop sends SIGTERM and waits for the exit, SIGKILL after WaitLimit (a
// hang guard); it returns the exit error (nil for exit 0).
func (p *Process) Stop() error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(WaitLimit):
		p.Kill()
		return fmt.Errorf("no exit within %s of SIGTERM; killed", WaitLimit)
	}
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL) // it may have exited: then it is done
	<-p.exited
}

// Output is what the process wrote so far, stdout and stderr.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// Problems returns the warnings and errors the process logged, as JSON lines.
func (p *Process) Problems() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.problems, "\n")
}

// Races is how many data races the race detector reported in the output.
func (p *Process) Races() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.races
}
