package modbus

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// guard bounds every wait for an event, so a broken driver fails the test
// instead of hanging it; it is not a timing assertion.
const guard = 60 * time.Second

// python returns the interpreter that has pymodbus (Debian's, where a
// pyenv or venv python3 comes first on PATH), failing the test with the apt
// packages to install when there is none.
func python(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat not found (%v); install it: apt-get install -y socat", err)
	}
	var tried []string
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		out, err := exec.Command(path, "-c", "import pymodbus, serial, serial_asyncio").CombinedOutput()
		if err == nil {
			return path
		}
		tried = append(tried, path+": "+strings.TrimSpace(string(out)))
	}
	t.Fatalf("no python3 with pymodbus and pyserial (%s); install them: apt-get install -y python3-pymodbus python3-serial", strings.Join(tried, "; "))
	return ""
}

// testBus is a pty pair made by socat: the driver opens Device, the board
// script (testdata/board.py, on pymodbus's RTU server) serves the other end.
type testBus struct {
	t      *testing.T
	py     string
	units  string
	inputs string
	dir    string
	Device string

	socat *exec.Cmd
	board *exec.Cmd
	stdin io.WriteCloser
	acks  chan string
	coils chan string
}

func startBus(t *testing.T, units string) *testBus {
	t.Helper()
	tb := &testBus{t: t, py: python(t), units: units, inputs: "8", dir: t.TempDir()}
	tb.Device = filepath.Join(tb.dir, "A")
	tb.plug()
	t.Cleanup(tb.unplug)
	return tb
}

// plug starts socat and the board, and returns once the board serves.
func (tb *testBus) plug() {
	t := tb.t
	t.Helper()
	for _, l := range []string{"A", "B"} {
		if err := os.Remove(filepath.Join(tb.dir, l)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	tb.socat = exec.Command("socat", "-d", "-d",
		"pty,raw,echo=0,link="+tb.Device, "pty,raw,echo=0,link="+filepath.Join(tb.dir, "B"))
	stderr, err := tb.socat.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.socat.Start(); err != nil {
		t.Fatalf("cannot start socat: %v", err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "starting data transfer loop") {
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(guard):
		t.Fatal("socat did not start its pty pair")
	}

	tb.board = exec.Command(tb.py, "testdata/board.py", "--port", filepath.Join(tb.dir, "B"), "--units", tb.units, "--inputs", tb.inputs)
	tb.board.Stderr = testWriter{t}
	if tb.stdin, err = tb.board.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := tb.board.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.board.Start(); err != nil {
		t.Fatalf("cannot start the board: %v", err)
	}
	ready := make(chan string, 1)
	acks, coils := make(chan string, 100), make(chan string, 100)
	tb.acks, tb.coils = acks, coils
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "ready":
				ready <- line
			case strings.HasPrefix(line, "error"):
				select {
				case ready <- line: // it failed to start
				default:
				}
				acks <- line
			case strings.HasPrefix(line, "coil "):
				coils <- line
			default:
				acks <- line
			}
		}
		close(ready)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			t.Fatalf("board did not start: %q", line)
		}
	case <-time.After(guard):
		t.Fatal("board did not start")
	}
}

// unplug stops the board and socat: the pty pair, the "adapter", is gone.
// The errors of killing them (and of Wait, which reports the kill) are the
// expected ones and are not checked.
func (tb *testBus) unplug() {
	// The line first, so the driver sees the adapter go, not a silent board.
	if tb.socat != nil {
		tb.socat.Process.Signal(syscall.SIGTERM)
		tb.socat.Wait()
		tb.socat = nil
	}
	if tb.board != nil {
		tb.stdin.Close()
		tb.board.Process.Kill()
		tb.board.Wait()
		tb.board = nil
	}
}

// do sends a command to the board and waits for its acknowledgement.
func (tb *testBus) do(cmd string) {
	t := tb.t
	t.Helper()
	if _, err := io.WriteString(tb.stdin, cmd+"\n"); err != nil {
		t.Fatalf("board command %q: %v", cmd, err)
	}
	select {
	case got := <-tb.acks:
		if got != "ok "+cmd {
			t.Fatalf("board command %q: got %q; want %q", cmd, got, "ok "+cmd)
		}
	case <-time.After(guard):
		t.Fatalf("board command %q: no acknowledgement", cmd)
	}
}

// awaitCoil waits for the board to see a coil write.
func (tb *testBus) awaitCoil(want string) {
	t := tb.t
	t.Helper()
	select {
	case got := <-tb.coils:
		if got != want {
			t.Fatalf("coil write: got %q; want %q", got, want)
		}
	case <-time.After(guard):
		t.Fatalf("coil write %q never came", want)
	}
}

type event struct {
	door int
	st   contract.DoorState
}

// startBank starts a bank for doors with fast test timings and returns the
// channel of its reports; the first report of each door (Watch, before any
// poll) is checked to be unknown.
func startBank(t *testing.T, doors ...Door) (*Bank, chan event) {
	t.Helper()
	b, err := New(Config{
		Doors:        doors,
		Timeout:      2 * time.Second, // generous: python on a busy CI machine
		PulseLength:  100 * time.Millisecond,
		PollInterval: 50 * time.Millisecond,
		RetryMin:     50 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan event, 10000)
	b.Watch(func(door int, st contract.DoorState) { events <- event{door, st} })
	for range doors {
		e := <-events
		if e.st.State != contract.DoorUnknown {
			t.Fatalf("door %d before any poll: got %q; want %q", e.door, e.st.State, contract.DoorUnknown)
		}
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b, events
}

// await waits for door to report state with a reason containing reason,
// skipping the reports of other doors; a report of door in another state
// first fails the test unless skip lists that state.
func await(t *testing.T, events chan event, door int, state, reason string, skip ...string) contract.DoorState {
	t.Helper()
	timeout := time.After(guard)
	for {
		select {
		case e := <-events:
			if e.door != door {
				continue
			}
			if e.st.State == state && strings.Contains(e.st.Reason, reason) {
				return e.st
			}
			if !contains(skip, e.st.State) {
				t.Fatalf("door %d: got %+v; want state %q, reason containing %q", door, e.st, state, reason)
			}
		case <-timeout:
			t.Fatalf("door %d never reported %q (%q)", door, state, reason)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
