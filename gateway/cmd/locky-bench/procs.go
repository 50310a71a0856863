package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// waitLimit bounds every wait on a child process; a child that does not
// become ready or does not stop within it fails the bench.
const waitLimit = 15 * time.Second

// buildGateway compiles the gateway as it ships (no race detector).
func buildGateway(ctx context.Context, bin string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/locky-edge/locky/gateway/cmd/locky-gateway")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot build the gateway (run the bench inside the module): %w\n%s", err, out)
	}
	return nil
}

// supervisor knows every child process the bench started, so that all of
// them are killed when it returns, also on an error or a signal.
type supervisor struct {
	mu       sync.Mutex
	children []*child
}

// child is a running child process whose stderr is kept (the last lines).
type child struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been waited for
	waitErr error         // set before exited is closed
	tail    *tail
}

func (s *supervisor) killAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.children {
		select {
		case <-c.exited:
			continue
		default:
		}
		if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			fmt.Fprintf(os.Stderr, "locky-bench: cannot kill %s (pid %d): %v\n", c.name, c.pid(), err)
		}
		<-c.exited
	}
	s.children = nil
}

// start starts cmd and calls onLine for every line of its stderr (from one
// goroutine, with the time it was read). It returns the time of the exec.
func (s *supervisor) start(name string, cmd *exec.Cmd, onLine func(line []byte, at time.Time)) (*child, time.Time, error) {
	// If the bench itself is killed, the kernel kills its children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("cannot start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, exited: make(chan struct{}), tail: &tail{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, t0, fmt.Errorf("cannot start %s: %w", name, err)
	}
	s.children = append(s.children, c)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			at := time.Now()
			c.tail.add(sc.Text())
			if onLine != nil {
				onLine(sc.Bytes(), at)
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // a line too long stops the scanner; keep the pipe drained
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, t0, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exitErr describes how the exited process ended, with its last log lines.
func (c *child) exitErr() error {
	return fmt.Errorf("%s: %v; last log lines:\n%s", c.name, c.waitErr, c.tail.String())
}

// stop sends sig and waits for the exit (SIGKILL after waitLimit). It
// returns the time from the signal to the exit; after SIGTERM, an exit status
// other than 0 is an error.
func (c *child) stop(sig syscall.Signal) (time.Duration, error) {
	t0 := time.Now()
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("cannot stop %s: %w", c.name, err)
	}
	select {
	case <-c.exited:
	case <-time.After(waitLimit):
		_ = c.cmd.Process.Kill() // it failed already; the error below says so
		<-c.exited
		return 0, fmt.Errorf("%s did not exit within %s of %s; killed", c.name, waitLimit, sig)
	}
	took := time.Since(t0)
	if c.waitErr != nil && sig == syscall.SIGTERM {
		return took, c.exitErr()
	}
	return took, nil
}

// tail keeps the last lines of a log.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 20 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, line)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// gatewayCmd is how the bench runs the gateway.
type gatewayCmd struct {
	bin     string
	codeKey string // hex; given so that no key file is generated at start
	// cloudURL and lockerID, when cloudURL is set, link the gateway to a
	// cloud broker; empty means no bridge.
	cloudURL, lockerID string
}

// gatewayProc is a running gateway.
type gatewayProc struct {
	*child
	mqtt  string        // broker address
	http  string        // HTTP address (host:port): /metrics
	ready time.Duration // exec → "locker ready" log line
	// startup is the gateway's own measure, logged on the ready line: from
	// the configuration parsed to ready.
	startup time.Duration
}

// startGateway runs the gateway on free loopback ports with no simulated
// doors and waits for its "locker ready" log line.
func (s *supervisor) startGateway(ctx context.Context, gw gatewayCmd, dataDir string) (*gatewayProc, error) {
	cmd := exec.Command(gw.bin, "--data-dir", dataDir, "--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--log-format", "json", "--sim-doors", "0", "--code-key", gw.codeKey,
		// A used courier code reopens its door within the grace period; the
		// door cycles reuse it, so the grace must outlast the run.
		"--grace", "24h")
	if gw.cloudURL != "" {
		cmd.Args = append(cmd.Args, "--cloud-url", gw.cloudURL, "--locker-id", gw.lockerID)
	}
	type readyLine struct {
		mqtt, http string
		startup    time.Duration
		at         time.Time
	}
	ready := make(chan readyLine, 1)
	c, t0, err := s.start("locky-gateway", cmd, func(line []byte, at time.Time) {
		if !bytes.Contains(line, []byte(`"locker ready"`)) {
			return
		}
		var l struct {
			Msg     string        `json:"msg"`
			MQTT    string        `json:"mqtt"`
			HTTP    string        `json:"http"`    // http://host:port
			Startup time.Duration `json:"startup"` // slog writes durations in nanoseconds
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "locker ready" {
			select {
			case ready <- readyLine{l.MQTT, strings.TrimPrefix(l.HTTP, "http://"), l.Startup, at}:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ready:
		return &gatewayProc{child: c, mqtt: r.mqtt, http: r.http, ready: r.at.Sub(t0), startup: r.startup}, nil
	case <-c.exited:
		return nil, fmt.Errorf("the gateway exited before it was ready: %w", c.exitErr())
	case <-time.After(waitLimit):
		return nil, fmt.Errorf("the gateway was not ready within %s; last log lines:\n%s", waitLimit, c.tail.String())
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// mosquittoProc is a running Mosquitto broker.
type mosquittoProc struct {
	*child
	addr  string
	port  int
	ready time.Duration // exec → the port accepts a TCP connection
}

// mosquittoConfig is the broker's configuration: its defaults (queues,
// in-flight window) except for the loopback listener, no persistence file
// and Nagle off, as the gateway's broker has no persistence and sets
// TCP_NODELAY (Go's default).
const mosquittoConfig = `listener %d 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stderr
`

// startMosquitto runs Mosquitto on a free loopback port and polls the port
// until it accepts a connection.
//
// Stop it with SIGKILL: Mosquitto 2.0 blocks SIGTERM while it waits for
// network events and handles it only at its next wake-up, which on an idle
// broker can be many seconds later.
func (s *supervisor) startMosquitto(ctx context.Context, bin, dir string) (*mosquittoProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return s.startMosquittoOn(ctx, bin, dir, port, "")
}

// startMosquittoOn is startMosquitto on a given port, with extra lines of
// configuration. Started again on the same port and dir, it is the same
// broker restarted (without its sessions: persistence is off).
func (s *supervisor) startMosquittoOn(ctx context.Context, bin, dir string, port int, extra string) (*mosquittoProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create %q: %w", dir, err)
	}
	conf := fmt.Sprintf(mosquittoConfig, port) + extra
	if os.Geteuid() == 0 {
		conf += "user root\n" // as root it would switch to the user mosquitto
	}
	confPath := dir + "/mosquitto.conf"
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the mosquitto config: %w", err)
	}
	return s.runMosquitto(ctx, bin, confPath, port)
}

// runMosquitto runs Mosquitto with the config file at confPath, whose
// listener is 127.0.0.1:port, and polls the port until it accepts a
// connection.
func (s *supervisor) runMosquitto(ctx context.Context, bin, confPath string, port int) (*mosquittoProc, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c, t0, err := s.start("mosquitto", exec.Command(bin, "-c", confPath), nil)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(waitLimit)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			ready := time.Since(t0)
			if err := conn.Close(); err != nil {
				return nil, fmt.Errorf("mosquitto: %w", err)
			}
			return &mosquittoProc{child: c, addr: addr, port: port, ready: ready}, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("mosquitto exited before it listened: %w", c.exitErr())
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("mosquitto did not listen on %s within %s: %w", addr, waitLimit, err)
		}
		time.Sleep(200 * time.Microsecond) // polling interval: the resolution of its start-to-ready time
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot find a free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("cannot release port %d: %w", port, err)
	}
	return port, nil
}

// startRuns starts a program n times (start returns the exec → ready time)
// and stops it each time with sig.
func startRuns(ctx context.Context, n int, sig syscall.Signal, start func(i int) (*child, time.Duration, error)) (ready, stop sample, err error) {
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, nil, context.Cause(ctx)
		}
		c, r, err := start(i)
		if err != nil {
			return nil, nil, err
		}
		s, err := c.stop(sig)
		if err != nil {
			return nil, nil, err
		}
		ready, stop = append(ready, r), append(stop, s)
	}
	return ready, stop, nil
}

// memory is a process's resident memory from /proc/PID/status, in KiB.
type memory struct {
	rss, anon, file, peak int64 // VmRSS, RssAnon, RssFile, VmHWM
}

func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("cannot read the memory of pid %d (Linux only): %w", pid, err)
	}
	var m memory
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file, "VmHWM:": &m.peak}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && fields[f[0]] != nil {
			if *fields[f[0]], err = strconv.ParseInt(f[1], 10, 64); err != nil {
				return m, fmt.Errorf("pid %d: bad %s line %q: %w", pid, f[0], line, err)
			}
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("pid %d: no VmRSS in /proc/%d/status", pid, pid)
	}
	return m, nil
}

// describeMachine returns the machine line of the report.
func describeMachine(ctx context.Context, mosquitto string) string {
	mq := "mosquitto (version unknown)"
	// mosquitto -h prints its version first and exits with a usage status.
	if out, _ := exec.CommandContext(ctx, mosquitto, "-h").CombinedOutput(); len(out) > 0 {
		mq, _, _ = strings.Cut(string(out), "\n")
	}
	return describeHost(ctx) + ", " + mq + ", " + time.Now().UTC().Format("2006-01-02 15:04 UTC")
}

// describeHost names the CPU, the cores, Go and the platform.
func describeHost(ctx context.Context) string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	goVersion := runtime.Version()
	if out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output(); err == nil {
		goVersion = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("%s, %d cores (runtime.NumCPU), %s %s/%s", cpu, runtime.NumCPU(), goVersion, runtime.GOOS, runtime.GOARCH)
}

// loadAverage returns the 1, 5 and 15 minute load averages of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], ", ")
	}
	return "unknown"
}

// readWriteBytes returns write_bytes of /proc/PID/io: the bytes the process
// caused to be sent to the block layer (counted as it dirties page-cache
// pages). A file system without a block device (tmpfs) counts 0.
func readWriteBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read the I/O counters of pid %d (Linux only): %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("pid %d: no write_bytes in /proc/%d/io", pid, pid)
}

// fileSystem names the file system dir is on, by its statfs magic number.
func fileSystem(dir string) string {
	var s syscall.Statfs_t
	if err := syscall.Statfs(dir, &s); err != nil {
		return "unknown file system"
	}
	names := map[int64]string{0xEF53: "ext4", 0x01021994: "tmpfs", 0x794c7630: "overlayfs", 0x58465342: "xfs",
		0x9123683E: "btrfs", 0x4d44: "vfat", 0x2011BAB0: "exfat", 0xF2F52010: "f2fs"}
	if n, ok := names[int64(s.Type)]; ok {
		return n
	}
	return fmt.Sprintf("file system 0x%x", s.Type)
}

// deviceWrites returns the block device dir is on (MAJ:MIN) and the bytes
// written to it so far by everyone, from /sys/dev/block/MAJ:MIN/stat: with
// the file system's journal and metadata, as the card sees them. ok is false
// when dir has no block device of its own (tmpfs, overlayfs).
func deviceWrites(dir string) (dev string, written int64, ok bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return "", 0, false
	}
	d := uint64(st.Dev)
	dev = fmt.Sprintf("%d:%d", (d>>8)&0xfff|(d>>32)&^0xfff, d&0xff|(d>>12)&^0xff)
	b, err := os.ReadFile("/sys/dev/block/" + dev + "/stat")
	if err != nil {
		return dev, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return dev, 0, false
	}
	sectors, err := strconv.ParseInt(f[6], 10, 64)
	return dev, sectors * 512, err == nil
}
