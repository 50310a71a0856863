package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoPath is where the Debian package installs the broker.
const MosquittoPath = "/usr/sbin/mosquitto"

// startTimeout bounds the wait for the broker to listen or to exit.
const startTimeout = 10 * time.Second

// MosquittoOption changes the broker's configuration.
type MosquittoOption func(*mosquittoConfig)

type mosquittoConfig struct {
	passwordFile string
	aclFile      string
	extra        []string
}

// WithPasswordFile makes the broker check clients against a password file
// (made with mosquitto_passwd) and refuse anonymous clients.
func WithPasswordFile(path string) MosquittoOption {
	return func(c *mosquittoConfig) { c.passwordFile = path }
}

// WithACLFile makes the broker apply an ACL file and refuse anonymous clients.
func WithACLFile(path string) MosquittoOption {
	return func(c *mosquittoConfig) { c.aclFile = path }
}

// WithConfig appends lines to the broker's configuration file.
func WithConfig(lines ...string) MosquittoOption {
	return func(c *mosquittoConfig) { c.extra = append(c.extra, lines...) }
}

// Mosquitto is a real Mosquitto broker run by a test. It keeps its port and
// its persistence file across Stop and Start, like a restarted cloud broker.
type Mosquitto struct {
	// Port and Addr (127.0.0.1:Port) are where the broker listens.
	Port int
	Addr string

	t       testing.TB
	dir     string
	conf    string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartMosquitto runs /usr/sbin/mosquitto on a free 127.0.0.1 port with
// persistence on, TCP_NODELAY, no limit on the messages queued for a
// persistent session, and anonymous access unless a password or ACL file is
// given. The test fails, naming the package, when the broker is not installed
// (apt-get install mosquitto). It is stopped by t.Cleanup; its log is shown if the test failed.
func StartMosquitto(t testing.TB, opts ...MosquittoOption) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoPath); err != nil {
		t.Fatalf("mosquitto is not installed (apt-get install -y mosquitto): %s", err)
	}
	var cfg mosquittoConfig
	for _, o := range opts {
		o(&cfg)
	}
	dir := t.TempDir()
	m := &Mosquitto{t: t, dir: dir, conf: filepath.Join(dir, "mosquitto.conf"), logPath: filepath.Join(dir, "mosquitto.log")}
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			if out, err := os.ReadFile(m.logPath); err == nil {
				t.Logf("mosquitto log:\n%s", out)
			}
		}
	})
	// A free port can be taken by another test process between FreePort and
	// the broker's bind: then another port.
	for attempt := 1; ; attempt++ {
		m.Port = FreePort(t)
		m.Addr = "127.0.0.1:" + strconv.Itoa(m.Port)
		if err := os.WriteFile(m.conf, mosquittoConf(m, cfg), 0o600); err != nil {
			t.Fatalf("cannot write the mosquitto config: %s", err)
		}
		err := m.start()
		if err == nil {
			return m
		}
		if attempt == 5 || !strings.Contains(err.Error(), "Address already in use") {
			t.Fatalf("mosquitto did not start: %s", err)
		}
	}
}

func mosquittoConf(m *Mosquitto, cfg mosquittoConfig) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "user root\n")
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", m.Port)
	fmt.Fprintf(&b, "persistence true\npersistence_location %s/\n", m.dir)
	fmt.Fprintf(&b, "set_tcp_nodelay true\n")
	fmt.Fprintf(&b, "max_queued_messages 0\n")
	fmt.Fprintf(&b, "log_dest stderr\nlog_timestamp_format %%H:%%M:%%S\n")
	anonymous := cfg.passwordFile == "" && cfg.aclFile == ""
	fmt.Fprintf(&b, "allow_anonymous %t\n", anonymous)
	if cfg.passwordFile != "" {
		fmt.Fprintf(&b, "password_file %s\n", cfg.passwordFile)
	}
	if cfg.aclFile != "" {
		fmt.Fprintf(&b, "acl_file %s\n", cfg.aclFile)
	}
	for _, l := range cfg.extra {
		fmt.Fprintln(&b, l)
	}
	return b.Bytes()
}

// URL returns the broker's address as mqtt://127.0.0.1:port.
func (m *Mosquitto) URL() string { return "mqtt://" + m.Addr }

// Start starts the broker if it is not running and waits until it listens.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if err := m.start(); err != nil {
		m.t.Fatalf("mosquitto did not start: %s", err)
	}
}

// start starts the broker and waits until it says it runs: something
// answering on the port may be another process's socket.
func (m *Mosquitto) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return nil
	}
	from := int64(0)
	if fi, err := os.Stat(m.logPath); err == nil {
		from = fi.Size() // this start's lines only
	}
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open the mosquitto log: %w", err)
	}
	cmd := exec.Command(MosquittoPath, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("cannot start mosquitto: %w", err)
	}
	exited := make(chan struct{})
	m.cmd, m.exited = cmd, exited
	go func() {
		_ = cmd.Wait() // how it ended is in its log
		_ = logf.Close()
		close(exited)
	}()
	alive := func() error {
		select {
		case <-exited:
			out, _ := os.ReadFile(m.logPath)
			return fmt.Errorf("mosquitto exited at start:\n%s", out)
		default:
			return nil
		}
	}
	err = WaitListening(m.Addr, startTimeout, alive)
	if err == nil {
		err = m.awaitRunning(from, exited)
	}
	if err != nil {
		_ = cmd.Process.Kill() // if it still runs
		<-exited
		m.cmd, m.exited = nil, nil
	}
	return err
}

// awaitRunning waits (bounded) for the log line that says the broker runs,
// after from, or for its exit, which it returns with the log.
func (m *Mosquitto) awaitRunning(from int64, exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	for {
		b, _ := os.ReadFile(m.logPath)
		if int64(len(b)) > from && bytes.Contains(b[from:], []byte(" running")) {
			return nil
		}
		select {
		case <-exited:
			b, _ = os.ReadFile(m.logPath) // all it wrote before it exited
			return fmt.Errorf("mosquitto exited at start:\n%s", b[min(from, int64(len(b))):])
		case <-time.After(10 * time.Millisecond): // polling the log file: nothing to await
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto did not say it runs within %s", startTimeout)
		}
	}
}

// Stop stops the broker with SIGTERM (it saves its persistence file) and
// waits for it to exit. Stopping a stopped broker does nothing.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

// Kill stops the broker with SIGKILL: what it did not save is lost.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

// Restart stops the broker (SIGTERM) and starts it again on the same port
// with the same data.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.Start()
}

func (m *Mosquitto) signal(sig syscall.Signal) {
	m.t.Helper()
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		m.t.Errorf("cannot signal mosquitto: %s", err)
	}
	select {
	case <-exited:
	case <-time.After(startTimeout):
		m.t.Errorf("mosquitto did not exit %s after %s; killing it", startTimeout, sig)
		_ = cmd.Process.Kill()
		<-exited
	}
	m.mu.Lock()
	m.cmd, m.exited = nil, nil
	m.mu.Unlock()
}
