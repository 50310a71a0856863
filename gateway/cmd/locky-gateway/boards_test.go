package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.bug.st/serial"

	"github.com/locky-edge/locky/lockio/kerong/kerongtest"
	"github.com/locky-edge/locky/lockio/modbus/modbustest"
)

// runBoards runs the command line args through run and returns its exit
// code, stdout and stderr.
func runBoards(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, func(string) string { return "" }, &stdout, &stderr)
	t.Logf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

// linesWith returns the lines of out that start with prefix.
func linesWith(out, prefix string) []string {
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			got = append(got, l)
		}
	}
	return got
}

func writeDoorMap(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "doors.map")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kerongBus starts a pty pair with an emulator of boards (address →
// channels) on its far end; setup runs before it serves.
func kerongBus(t *testing.T, boards map[byte]int, setup func(*kerongtest.Emulator)) string {
	t.Helper()
	socat := kerongtest.StartSocat(t, t.TempDir())
	emu := kerongtest.NewEmulator(t, boards)
	if setup != nil {
		setup(emu)
	}
	emu.Attach(socat.B)
	t.Cleanup(emu.Detach)
	return socat.A
}

func TestBoardsScanKerongFindsTheBoardsPresent(t *testing.T) {
	dev := kerongBus(t, map[byte]int{0: 16, 5: 24}, func(e *kerongtest.Emulator) { e.SetOpen(5, 1, true) })
	code, out, _ := runBoards(t, "boards", "scan", "--kind", "kerong", "--bus", dev)
	if code != 0 {
		t.Fatalf("got exit %d; want 0", code)
	}
	got := strings.Join(linesWith(out, "board "), "\n")
	want := "board 0: answers: 16 channels; status bits of channels 1-16: 11111111 11111111\n" +
		"board 5: answers: 24 channels; status bits of channels 1-24: 01111111 11111111 11111111"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(out, "2 of 32 addresses answered; 30 silent") {
		t.Fatalf("no summary of 2 boards in 32 addresses in\n%s", out)
	}
}

func TestBoardsScanKerongNamesABadChecksum(t *testing.T) {
	dev := kerongBus(t, map[byte]int{2: 8}, func(e *kerongtest.Emulator) { e.SetCorrupt(2, true) })
	code, out, _ := runBoards(t, "boards", "scan", "--kind", "kerong", "--bus", dev, "--units", "1-3")
	if code != 1 {
		t.Fatalf("got exit %d; want 1", code)
	}
	got := linesWith(out, "board ")
	if len(got) != 1 || !strings.HasPrefix(got[0], "board 2: ") || !strings.Contains(got[0], "bad checksum: a wiring, baud or parity problem") {
		t.Fatalf("got %q; want one line on board 2's bad checksum", got)
	}
}

func TestBoardsScanModbusFindsTheUnitsPresent(t *testing.T) {
	bus := modbustest.StartBus(t, "1,2")
	bus.Do("set 2 7 1")
	// A generous timeout: python on a busy machine.
	code, out, _ := runBoards(t, "boards", "scan", "--kind", "modbus", "--bus", bus.Device, "--units", "1-3", "--timeout", "2s")
	if code != 0 {
		t.Fatalf("got exit %d; want 0", code)
	}
	got := strings.Join(linesWith(out, "unit "), "\n")
	want := "unit 1: answers: 8 discrete inputs read (0-7): 00000000\n" +
		"unit 2: answers: 8 discrete inputs read (0-7): 00000001"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestBoardsScanEmptyBusHints(t *testing.T) {
	socat := kerongtest.StartSocat(t, t.TempDir()) // nothing on the far end
	code, out, _ := runBoards(t, "boards", "scan", "--kind", "kerong", "--bus", socat.A, "--units", "0-2", "--timeout", "50ms")
	if code != 1 {
		t.Fatalf("got exit %d; want 1", code)
	}
	for _, want := range []string{"0 of 3 addresses answered", "no board answered", "A to A and B to B", "termination", "--baud"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stdout lacks %q:\n%s", want, out)
		}
	}
}

func TestBoardsUsageMistakes(t *testing.T) {
	f := func(args ...string) {
		t.Helper()
		if code, _, _ := runBoards(t, append([]string{"boards"}, args...)...); code != 2 {
			t.Fatalf("boards %q: got exit %d; want 2", args, code)
		}
	}
	f()
	f("nonsense")
	f("scan", "--bus", "/dev/ttyUSB0")
	f("scan", "--kind", "kerong")
	f("scan", "--kind", "dali", "--bus", "/dev/ttyUSB0")
	f("scan", "--kind", "kerong", "--bus", "/dev/ttyUSB0", "--units", "0-32")
	f("scan", "--kind", "modbus", "--bus", "/dev/ttyUSB0", "--units", "0-4")
	f("scan", "--kind", "modbus", "--bus", "/dev/ttyUSB0", "--parity", "mark")
	f("scan", "--kind", "modbus", "--bus", "/dev/ttyUSB0", "--bogus")
	f("test", "--door", "1")
	f("test", "--door-map", "/nonexistent/doors.map", "--door", "1")
	f("test", "--door-map", writeDoorMap(t, "door 1 kerong /dev/ttyUSB0 board=0 lock=1"), "--door", "2")
}

func TestBoardsParseUnits(t *testing.T) {
	f := func(s, want string) {
		t.Helper()
		u, err := parseUnits(s, 1, 247)
		got := fmt.Sprint(u)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Fatalf("parseUnits(%q): got %s; want %s", s, got, want)
		}
	}
	f("1-4", "[1 2 3 4]")
	f("3", "[3]")
	f("1-2,9,2", "[1 2 9]")
	f("0-3", "error")
	f("4-2", "error")
	f("1-248", "error")
	f("x", "error")
	f("", "error")
}

func kerongDoorMap(t *testing.T, dev string) string {
	return writeDoorMap(t,
		"bus "+dev+" timeout=500ms",
		"door 3 kerong "+dev+" board=0 lock=2 channels=16",
		"door 4 kerong "+dev+" board=0 lock=3 channels=16",
		"poll-interval 20ms")
}

func TestBoardsTestDoorOpens(t *testing.T) {
	dev := kerongBus(t, map[byte]int{0: 16}, nil)
	// --wait only bounds the wait: the door opens as soon as it is polled.
	code, out, _ := runBoards(t, "boards", "test", "--door-map", kerongDoorMap(t, dev), "--door", "3", "--wait", "20s")
	if code != 0 {
		t.Fatalf("got exit %d; want 0", code)
	}
	for _, want := range []string{"door 3: kerong board 0 lock 2 on " + dev, "door 3: closed (door sensor)", "door 3: opened: lock and sensor wiring OK", "door 3: state after: open"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stdout lacks %q:\n%s", want, out)
		}
	}
}

func TestBoardsTestJammedLock(t *testing.T) {
	dev := kerongBus(t, map[byte]int{0: 16}, func(e *kerongtest.Emulator) { e.SetJammed(0, 2, true) })
	code, out, _ := runBoards(t, "boards", "test", "--door-map", kerongDoorMap(t, dev), "--door", "3", "--wait", "1s")
	if code != 1 {
		t.Fatalf("got exit %d; want 1", code)
	}
	for _, want := range []string{"door 3: no change within 1s: the lock is jammed, or the sensor is miswired", "door 3: state after: closed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stdout lacks %q:\n%s", want, out)
		}
	}
}

func TestBoardsTestModbusDoorOpens(t *testing.T) {
	bus := modbustest.StartBus(t, "1")
	doorMap := writeDoorMap(t,
		"bus "+bus.Device+" timeout=2s",
		"door 13 modbus "+bus.Device+" unit=1 coil=0 input=0 open-when=1",
		"pulse 100ms")
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		code := run([]string{"boards", "test", "--door-map", doorMap, "--door", "13", "--wait", "60s"}, func(string) string { return "" }, &stdout, &stderr)
		done <- result{code, stdout.String() + stderr.String()}
	}()
	bus.AwaitCoil("coil 1 0 1")
	bus.Do("set 1 0 1") // the door swings open
	r := <-done
	t.Log(r.out)
	if r.code != 0 || !strings.Contains(r.out, "door 13: opened: lock and sensor wiring OK") {
		t.Fatalf("got exit %d; want 0 and the door opened", r.code)
	}
}

func TestBoardsTestRefusesABusyPort(t *testing.T) {
	dev := kerongBus(t, map[byte]int{0: 16}, nil)
	// This process stands for a running gateway holding the adapter.
	p, err := serial.Open(dev, &serial.Mode{BaudRate: 9600})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	code, _, stderr := runBoards(t, "boards", "test", "--door-map", kerongDoorMap(t, dev), "--door", "3")
	if code != 1 || !strings.Contains(stderr, dev+" is busy") || !strings.Contains(stderr, "stop the gateway first") {
		t.Fatalf("got exit %d, stderr %q; want 1 and the port busy", code, stderr)
	}
	code, _, stderr = runBoards(t, "boards", "scan", "--kind", "kerong", "--bus", dev)
	if code != 1 || !strings.Contains(stderr, dev+" is busy") {
		t.Fatalf("scan: got exit %d, stderr %q; want 1 and the port busy", code, stderr)
	}
}
