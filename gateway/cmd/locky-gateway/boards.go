package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.bug.st/serial"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/kerong"
	"github.com/locky-edge/locky/lockio/modbus"
)

const boardsUsage = `usage: locky-gateway boards scan|test [options]

Commissioning of the lock boards, for the technician wiring a cabinet. Stop
the gateway first (systemctl stop locky-gateway): the commands open the
RS485 adapter themselves, and refuse a port the gateway holds.

  locky-gateway boards scan --kind kerong|modbus --bus DEVICE [--baud N]
        [--parity none|even|odd] [--timeout D] [--units LIST]
    Asks every address of the bus and prints one line per board that
    answers, with what it reports, and the errors that point at the wiring.
    Exit 0 if a board answered, 1 if none did, 2 on a usage mistake.

  locky-gateway boards test --door-map FILE --door N [--wait D]
    Starts the door's boards as the gateway does, pulses the door's lock and
    says whether its sensor showed the door open. Exit 0 if it opened.

Run either with -h for its options.
`

// boards runs the commissioning subcommands: boards scan, boards test.
func boards(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, boardsUsage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "scan":
		return boardsScan(ctx, args[1:], stdout, stderr)
	case "test":
		return boardsTest(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, boardsUsage)
		return 0
	}
	fmt.Fprintf(stderr, "locky-gateway boards: unknown command %q\n\n%s", args[0], boardsUsage)
	return 2
}

const scanHelp = `usage: locky-gateway boards scan --kind kerong|modbus --bus DEVICE [options]

Kerong boards: a read-all request to each DIP address (default 0-31); a
board that answers shows its channel count (8 per status byte of its reply)
and each channel's status bit, channel 1 first (1 = set: closed/locked on
the standard firmware, open where the door map says open-when-set).
Modbus boards: reads discrete inputs 0-7 of each unit (fewer if the board
refuses 8). The default units are 1-16: every silent address costs
--timeout, so a full --units 1-247 sweep at 300ms takes over a minute.

An address that stays silent (timeout) has no board. A bad checksum or CRC,
or a garbled reply, is a wiring or baud problem: check A to A and B to B,
the 120 ohm termination at both ends, the ground, --baud and --parity.

Options:
`

// scanArgs are the options of boards scan.
type scanArgs struct {
	kind, dev, parity string
	baud              int
	timeout           time.Duration
	list              string // the --units list, or the kind's default
	units             []int  // the addresses of list
}

// boardsScan is boards scan: it asks every address of a bus and prints what
// answers; it returns the exit code.
func boardsScan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("locky-gateway boards scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), scanHelp)
		fs.PrintDefaults()
	}
	var a scanArgs
	fs.StringVar(&a.kind, "kind", "", "board family: kerong or modbus (required)")
	fs.StringVar(&a.dev, "bus", "", "serial device of the RS485 adapter, e.g. /dev/serial/by-id/usb-FTDI_…-port0 (required)")
	fs.IntVar(&a.baud, "baud", 9600, "bit rate of the boards")
	fs.StringVar(&a.parity, "parity", "none", "parity: none, even or odd")
	fs.DurationVar(&a.timeout, "timeout", 300*time.Millisecond, "how long each address may take to answer")
	fs.StringVar(&a.list, "units", "", "addresses to ask: a list of N and N-M, e.g. 1-4,9 (default 0-31 for kerong, 1-16 for modbus)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "locky-gateway boards scan: unexpected argument %q; see --help\n", fs.Arg(0))
		return 2
	}
	if err := a.check(); err != nil {
		fmt.Fprintf(stderr, "locky-gateway boards scan: %v\n", err)
		return 2
	}
	if holder, ok := gatewayHolding(a.dev); ok {
		fmt.Fprintf(stderr, "locky-gateway boards scan: %s is busy: %s holds it; stop the gateway first (systemctl stop locky-gateway)\n", a.dev, holder)
		return 1
	}
	return a.scan(ctx, stdout, stderr)
}

// check says which option of boards scan to fix, and fills in the default
// --units list and the addresses to ask.
func (a *scanArgs) check() error {
	if a.dev == "" {
		return errors.New("--bus is required: the serial device of the RS485 adapter")
	}
	if a.baud <= 0 || a.timeout <= 0 {
		return errors.New("--baud and --timeout must be positive")
	}
	if a.parity != "none" && a.parity != "even" && a.parity != "odd" {
		return fmt.Errorf("--parity %s: use none, even or odd", a.parity)
	}
	var lo, hi int
	switch a.kind {
	case "kerong":
		lo, hi = 0, kerong.MaxBoard
	case "modbus":
		lo, hi = 1, 247
	case "":
		return errors.New("--kind is required: kerong or modbus")
	default:
		return fmt.Errorf("--kind %s: use kerong or modbus", a.kind)
	}
	if a.list == "" {
		a.list = map[string]string{"kerong": "0-31", "modbus": "1-16"}[a.kind]
	}
	units, err := parseUnits(a.list, lo, hi)
	if err != nil {
		return fmt.Errorf("--units %s: %w", a.list, err)
	}
	a.units = units
	return nil
}

// scan asks every address, prints what each says and a summary, and returns
// the exit code.
func (a *scanArgs) scan(ctx context.Context, stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "%s scan of %s at %d baud, parity %s, %d addresses (%s), %v each\n", a.kind, a.dev, a.baud, a.parity, len(a.units), a.list, a.timeout)
	scanBus := a.scanModbus
	if a.kind == "kerong" {
		scanBus = a.scanKerong
	}
	answered, silent, err := scanBus(ctx, stdout)
	if err != nil {
		return scanFailed(a.dev, err, stderr)
	}
	fmt.Fprintf(stdout, "%d of %d addresses answered; %d silent (timeout: no board there)\n", answered, len(a.units), silent)
	if answered == 0 {
		fmt.Fprintf(stdout, "no board answered on %s: check A to A and B to B, the 120 ohm termination at both ends of the bus, the boards' power and ground, and that --baud and --parity match the boards (factory 9600, none)\n", a.dev)
		return 1
	}
	return 0
}

// scanKerong asks every address of a Kerong bus and prints a line for each
// that answers or fails other than by silence.
func (a *scanArgs) scanKerong(ctx context.Context, stdout io.Writer) (answered, silent int, err error) {
	reports, err := kerong.Scan(ctx, a.dev, kerong.Bus{Baud: a.baud, Parity: a.parity, ResponseTimeout: a.timeout}, a.units)
	for _, r := range reports {
		switch {
		case r.Err == nil:
			answered++
			fmt.Fprintf(stdout, "board %d: answers: %d channels; status bits of channels 1-%d: %s\n", r.Addr, r.Channels, r.Channels, bitString(r.Set))
		case errors.Is(r.Err, kerong.ErrNoAnswer):
			silent++
		default:
			fmt.Fprintf(stdout, "board %d: %v\n", r.Addr, r.Err)
		}
	}
	return answered, silent, err
}

// scanModbus asks every unit of a Modbus bus and prints a line for each
// that answers or fails other than by silence.
func (a *scanArgs) scanModbus(ctx context.Context, stdout io.Writer) (answered, silent int, err error) {
	cfg := modbus.Config{Baud: a.baud, Parity: map[string]modbus.Parity{"none": modbus.ParityNone, "even": modbus.ParityEven, "odd": modbus.ParityOdd}[a.parity], Timeout: a.timeout}
	reports, err := modbus.Scan(ctx, a.dev, cfg, a.units)
	for _, r := range reports {
		var ex *modbus.ExceptionError
		switch {
		case r.Err == nil:
			answered++
			fmt.Fprintf(stdout, "unit %d: answers: %d discrete inputs read (0-%d): %s\n", r.Unit, len(r.Inputs), len(r.Inputs)-1, bitString(r.Inputs))
		case errors.As(r.Err, &ex):
			answered++ // a board is there, it refuses the request
			fmt.Fprintf(stdout, "unit %d: answers, but with %v: has it discrete inputs at 0?\n", r.Unit, r.Err)
		case errors.Is(r.Err, modbus.ErrTimeout):
			silent++
		default: // ErrCRC, ErrFrame
			fmt.Fprintf(stdout, "unit %d: %v: a wiring, baud or parity problem (A/B, termination, --baud, --parity), or two boards with one address\n", r.Unit, r.Err)
		}
	}
	return answered, silent, err
}

// scanFailed reports a scan that could not use the port.
func scanFailed(dev string, err error, stderr io.Writer) int {
	var pe *serial.PortError
	if errors.As(err, &pe) && pe.Code() == serial.PortBusy {
		fmt.Fprintf(stderr, "locky-gateway boards scan: %s is busy: another program (the gateway?) holds it; stop it first: %v\n", dev, err)
		return 1
	}
	fmt.Fprintf(stderr, "locky-gateway boards scan: %v (is the adapter plugged in, and the path right? ls /dev/serial/by-id/)\n", err)
	return 1
}

// parseUnits reads a list such as "1-4,9" of addresses in lo..hi.
func parseUnits(s string, lo, hi int) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, err1 := strconv.Atoi(a)
		to, err2 := from, error(nil)
		if isRange {
			to, err2 = strconv.Atoi(b)
		}
		if err1 != nil || err2 != nil || from > to {
			return nil, fmt.Errorf("%q: write N or N-M, e.g. %d-%d", part, lo, min(lo+15, hi))
		}
		if from < lo || to > hi {
			return nil, fmt.Errorf("%q: addresses are %d..%d", part, lo, hi)
		}
		for u := from; u <= to; u++ {
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// bitString writes bits as 0 and 1, first bit first, in groups of 8.
func bitString(bits []bool) string {
	var b strings.Builder
	for i, set := range bits {
		if i > 0 && i%8 == 0 {
			b.WriteByte(' ')
		}
		b.WriteByte("01"[btoi(set)])
	}
	return b.String()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// gatewayHolding reports whether a locky-gateway process (this one
// included) has dev open, and which one, by looking through /proc. Only a
// gateway counts: a pty's other end (socat) holds it too. It finds only
// the processes it may read (all of them as root); for the others the
// exclusive open of the serial port (TIOCEXCL) refuses a second opener,
// except root. Without /proc (not Linux) it finds nothing.
func gatewayHolding(dev string) (string, bool) {
	target, err := os.Stat(dev)
	if err != nil {
		return "", false // the open will say what is wrong with the path
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return "", false
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		dir := filepath.Join("/proc", p.Name())
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || !strings.HasPrefix(string(comm), "locky-gateway") {
			continue // ended meanwhile, or not a gateway
		}
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue // not ours to read
		}
		for _, fd := range fds {
			fi, err := os.Stat(filepath.Join(dir, "fd", fd.Name()))
			if err == nil && os.SameFile(fi, target) {
				return fmt.Sprintf("%s (pid %s)", strings.TrimSpace(string(comm)), p.Name()), true
			}
		}
	}
	return "", false
}

// portBusy reports whether dev is held by a gateway or, through the
// exclusive open, by any other program.
func portBusy(dev string) (string, bool) {
	if holder, ok := gatewayHolding(dev); ok {
		return holder + " holds it", true
	}
	p, err := serial.Open(dev, &serial.Mode{BaudRate: 9600})
	var pe *serial.PortError
	if errors.As(err, &pe) && pe.Code() == serial.PortBusy {
		return "another program holds it", true
	}
	if err == nil {
		if err := p.Close(); err != nil {
			return fmt.Sprintf("cannot close it after a trial open: %v", err), true
		}
	}
	return "", false // another error: the bank reports it as the door's fault
}

const testHelp = `usage: locky-gateway boards test --door-map FILE --door N [--wait D]

Builds the banks of the door's bus from the door map as the gateway does,
waits for the door's first state, pulses its lock and waits for its sensor:
  opened      the lock released and the sensor saw the door open: wiring OK
  no change   within --wait: the lock is jammed, or the sensor is miswired
              or of the wrong polarity (open-when-set, open-when=)
  board fault the board did not answer, with the reason
then prints the door's state after. The door must be closed at the start.
Exit 0 if the door opened, 1 otherwise, 2 on a usage or door-map mistake.
Stop the gateway first: the command refuses a port the gateway holds.

Options:
`

// bank is what boards test needs of a lock-board bank (kerong.Bank,
// modbus.Bank).
type bank interface {
	Open(door int) error
	Watch(report func(door int, st contract.DoorState))
	Start(ctx context.Context) error
	Close() error
}

// boardsTest is boards test: it pulses one door's lock and says what its
// sensor showed; it returns the exit code.
func boardsTest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("locky-gateway boards test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), testHelp)
		fs.PrintDefaults()
	}
	mapPath := fs.String("door-map", "", "the door map file (required)")
	n := fs.Int("door", 0, "the door to test (required)")
	wait := fs.Duration("wait", 5*time.Second, "how long the door may take to show a state, and to open after the pulse")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "locky-gateway boards test: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usage("unexpected argument %q; see --help", fs.Arg(0))
	case *mapPath == "" || *n == 0:
		return usage("--door-map and --door are required")
	case *wait <= 0:
		return usage("--wait must be positive")
	}
	m, err := gateway.ReadDoorMap(*mapPath)
	if err != nil {
		return usage("%v", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, dev, what, err := doorBank(m, *n, *wait, log)
	if err != nil {
		return usage("%v", err)
	}
	if holder, busy := portBusy(dev); busy {
		fmt.Fprintf(stderr, "locky-gateway boards test: %s is busy: %s; stop the gateway first (systemctl stop locky-gateway)\n", dev, holder)
		return 1
	}
	say := func(format string, a ...any) {
		fmt.Fprintf(stdout, "door %d: "+format+"\n", append([]any{*n}, a...)...)
	}
	say("%s", what)
	return testDoor(ctx, b, *n, *wait, say, stderr)
}

// testDoor starts b, waits for door n's first state, pulses its lock and
// says (through say) what its sensor showed; it returns the exit code.
func testDoor(ctx context.Context, b bank, n int, wait time.Duration, say func(format string, a ...any), stderr io.Writer) int {
	events := &doorEvents{door: n, ready: make(chan struct{}, 1)}
	b.Watch(events.add)
	if err := b.Start(ctx); err != nil {
		fmt.Fprintln(stderr, "locky-gateway boards test:", err)
		return 1
	}
	defer func() {
		if err := b.Close(); err != nil {
			fmt.Fprintln(stderr, "locky-gateway boards test: closing the bank:", err)
		}
	}()

	first, ok := events.await(ctx, wait, func(st contract.DoorState) bool { return st.State != contract.DoorUnknown })
	if !closedAtStart(first, ok, wait, say) {
		return 1
	}
	say("%s (%s); pulsing the lock, waiting up to %v for the sensor", first.State, first.Reason, wait)
	if err := b.Open(n); err != nil {
		say("the pulse was not sent: %v", err)
		return 1
	}
	after, ok := events.await(ctx, wait, func(st contract.DoorState) bool { return st.State != first.State })
	code := sayPulseResult(after, ok, wait, say)
	last := events.last()
	say("state after: %s (%s)", last.State, last.Reason)
	return code
}

// closedAtStart reports whether the door's first state lets the test pulse
// it; when not, it says why (ok false: no state came within wait).
func closedAtStart(first contract.DoorState, ok bool, wait time.Duration, say func(format string, a ...any)) bool {
	switch {
	case !ok:
		say("no state within %v: %s (%s)", wait, first.State, first.Reason)
		return false
	case first.State == contract.DoorFault:
		say("board fault: %s", first.Reason)
		say("check the adapter, the board's address and power, A/B and termination; locky-gateway boards scan shows what answers")
		return false
	case first.State == contract.DoorOpen:
		say("open before the test (%s): close it and run the test again; if it is shut, the sensor's polarity is wrong", first.Reason)
		return false
	}
	return true
}

// sayPulseResult says what the door did after the pulse (ok false: no change
// within wait) and returns the exit code: 0 if it opened.
func sayPulseResult(after contract.DoorState, ok bool, wait time.Duration, say func(format string, a ...any)) int {
	switch {
	case !ok:
		say("no change within %v: the lock is jammed, or the sensor is miswired or of the wrong polarity (kerong: open-when-set; modbus: open-when=)", wait)
	case after.State == contract.DoorOpen:
		say("opened: lock and sensor wiring OK")
		return 0
	case after.State == contract.DoorFault:
		say("board fault: %s", after.Reason)
	default:
		say("changed to %s (%s)", after.State, after.Reason)
	}
	return 1
}

// doorBank builds the bank of door n's bus from the door map as the
// gateway does (the gateway's own constructor is not exported), with only
// the doors of that bus. It returns the bus device and what the door is.
func doorBank(m gateway.DoorMap, n int, wait time.Duration, log *slog.Logger) (bank, string, string, error) {
	if d, ok := m.Kerong.Doors[n]; ok {
		c := m.Kerong
		c.Doors, c.Buses = map[int]kerong.Door{}, map[string]kerong.Bus{}
		for k, other := range m.Kerong.Doors {
			if other.Bus == d.Bus {
				c.Doors[k] = other
			}
		}
		if s, ok := m.Kerong.Buses[d.Bus]; ok {
			c.Buses[d.Bus] = s
		}
		// The bank's own jam report comes after the wait: here the command
		// says what no change means.
		c.JamTimeout = 2 * wait
		c.Logger = log
		b, err := kerong.New(c)
		return b, d.Bus, fmt.Sprintf("kerong board %d lock %d on %s", d.Board, d.Lock, d.Bus), err
	}
	for _, c := range m.Modbus {
		for _, d := range c.Doors {
			if d.Door == n {
				c.Logger = log
				b, err := modbus.New(c)
				return b, d.Device, fmt.Sprintf("modbus unit %d coil %d input %d on %s", d.Unit, d.Coil, d.Input, d.Device), err
			}
		}
	}
	return nil, "", "", fmt.Errorf("door %d is not in the door map", n)
}

// doorEvents queues the states of one door reported by a bank; add never
// blocks the bank.
type doorEvents struct {
	door  int
	ready chan struct{} // a token when the queue has grown

	mu     sync.Mutex
	queue  []contract.DoorState
	latest contract.DoorState
}

func (e *doorEvents) add(door int, st contract.DoorState) {
	if door != e.door {
		return
	}
	e.mu.Lock()
	e.queue = append(e.queue, st)
	e.latest = st
	e.mu.Unlock()
	select {
	case e.ready <- struct{}{}:
	default:
	}
}

func (e *doorEvents) last() contract.DoorState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.latest
}

// await returns the first queued state for which want is true; false, and
// the last state, when none came within d or ctx ended.
func (e *doorEvents) await(ctx context.Context, d time.Duration, want func(contract.DoorState) bool) (contract.DoorState, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		e.mu.Lock()
		for len(e.queue) > 0 {
			st := e.queue[0]
			e.queue = e.queue[1:]
			if want(st) {
				e.mu.Unlock()
				return st, true
			}
		}
		e.mu.Unlock()
		select {
		case <-e.ready:
		case <-t.C:
			return e.last(), false
		case <-ctx.Done():
			return e.last(), false
		}
	}
}
