package modbustest

import (
	"bufio"
	_ "embed"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// WaitLimit bounds every wait on the board (its start, a command's
// acknowledgement, a coil write), so that a broken driver fails the test
// instead of hanging it. It is not a timing assertion.
const WaitLimit = 60 * time.Second

const aptPackages = "apt-get install -y socat python3-pymodbus python3-serial python3-serial-asyncio"

//go:embed board.py
var boardScript []byte

// Python returns the interpreter that has pymodbus (Debian's, where a pyenv
// or venv python3 comes first on PATH), failing the test with the apt
// packages to install when there is none, or when socat is missing.
func Python(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat not found (%v); install it: %s", err, aptPackages)
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
	t.Fatalf("no python3 with pymodbus and pyserial (%s); install them: %s", strings.Join(tried, "; "), aptPackages)
	return ""
}

// Bus is a serial bus with its boards: a pty pair made by socat, whose end
// Device the driver opens while board.py serves the other.
type Bus struct {
	// Device is the serial device the driver opens (a symlink to a pty).
	Device string

	t      testing.TB
	py     string
	units  string
	inputs string
	dir    string
	script string

	socat *exec.Cmd
	board *exec.Cmd
	stdin io.WriteCloser
	acks  chan string
	coils chan string
}

// StartBus starts a bus whose boards are units (comma-separated addresses,
// e.g. "1,2"), each with 8 coils and 8 discrete inputs, all off. It returns
// once the boards serve; they are stopped when the test ends.
func StartBus(t testing.TB, units string) *Bus {
	t.Helper()
	b := &Bus{t: t, py: Python(t), units: units, inputs: "8", dir: t.TempDir()}
	b.Device = filepath.Join(b.dir, "A")
	b.script = filepath.Join(b.dir, "board.py")
	if err := os.WriteFile(b.script, boardScript, 0o644); err != nil {
		t.Fatal(err)
	}
	b.Plug()
	t.Cleanup(b.Unplug)
	return b
}

// Plug starts socat and the boards, and returns once the boards serve: the
// adapter is plugged in again after Unplug.
func (b *Bus) Plug() {
	b.t.Helper()
	b.startSocat()
	b.startBoards()
}

// startSocat makes the pty pair, the "adapter", and waits until it carries
// data.
func (b *Bus) startSocat() {
	t := b.t
	t.Helper()
	for _, l := range []string{"A", "B"} {
		if err := os.Remove(filepath.Join(b.dir, l)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	b.socat = exec.Command("socat", "-d", "-d",
		"pty,raw,echo=0,link="+b.Device, "pty,raw,echo=0,link="+filepath.Join(b.dir, "B"))
	stderr, err := b.socat.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.socat.Start(); err != nil {
		t.Fatalf("cannot start socat: %v", err)
	}
	started := make(chan struct{})
	go func() {
		var once sync.Once
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "starting data transfer loop") {
				once.Do(func() { close(started) })
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(WaitLimit):
		t.Fatal("socat did not start its pty pair")
	}
}

// startBoards runs board.py on the far end of the pty pair and waits until
// it serves.
func (b *Bus) startBoards() {
	t := b.t
	t.Helper()
	b.board = exec.Command(b.py, b.script, "--port", filepath.Join(b.dir, "B"), "--units", b.units, "--inputs", b.inputs)
	b.board.Stderr = LogWriter(t)
	var err error
	if b.stdin, err = b.board.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := b.board.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.board.Start(); err != nil {
		t.Fatalf("cannot start the board: %v", err)
	}
	ready := make(chan string, 1)
	b.acks, b.coils = make(chan string, 100), make(chan string, 100)
	go readBoard(stdout, ready, b.acks, b.coils)
	select {
	case line := <-ready:
		if line != "ready" {
			t.Fatalf("board did not start: %q", line)
		}
	case <-time.After(WaitLimit):
		t.Fatal("board did not start")
	}
}

// readBoard sorts the board's output lines: its ready line (or the error
// it failed to start with), acknowledgements and coil writes.
func readBoard(stdout io.Reader, ready, acks, coils chan string) {
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
}

// Unplug stops the boards and socat: the pty pair, the "adapter", is gone.
// The errors of killing them (and of Wait, which reports the kill) are the
// expected ones and are not checked.
func (b *Bus) Unplug() {
	// The line first, so the driver sees the adapter go, not a silent board.
	if b.socat != nil {
		b.socat.Process.Signal(syscall.SIGTERM)
		b.socat.Wait()
		b.socat = nil
	}
	if b.board != nil {
		b.stdin.Close()
		b.board.Process.Kill()
		b.board.Wait()
		b.board = nil
	}
}

// Do sends a command to the boards (set, mute, unmute; see the package
// comment) and waits for its acknowledgement.
func (b *Bus) Do(cmd string) {
	t := b.t
	t.Helper()
	if _, err := io.WriteString(b.stdin, cmd+"\n"); err != nil {
		t.Fatalf("board command %q: %v", cmd, err)
	}
	select {
	case got := <-b.acks:
		if got != "ok "+cmd {
			t.Fatalf("board command %q: got %q; want %q", cmd, got, "ok "+cmd)
		}
	case <-time.After(WaitLimit):
		t.Fatalf("board command %q: no acknowledgement", cmd)
	}
}

// AwaitCoil waits for the next coil write the boards see and fails the test
// unless it is want ("coil <unit> <addr> <0|1>").
func (b *Bus) AwaitCoil(want string) {
	t := b.t
	t.Helper()
	select {
	case got := <-b.coils:
		if got != want {
			t.Fatalf("coil write: got %q; want %q", got, want)
		}
	case <-time.After(WaitLimit):
		t.Fatalf("coil write %q never came", want)
	}
}

// LogWriter returns a writer that logs each write to t.Log; writes after the
// test has finished are dropped instead of panicking.
func LogWriter(t testing.TB) io.Writer {
	w := &logWriter{t: t}
	t.Cleanup(w.stop)
	return w
}

type logWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *logWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
