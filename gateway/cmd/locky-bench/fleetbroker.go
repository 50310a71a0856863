package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// fleetACL is docker/cloud-mosquitto/acl's: each locker reaches only
// lockers/<its user name>/…, the back-end every locker.
const fleetACL = `user backend
topic readwrite lockers/#

pattern write lockers/%u/up/#
pattern write lockers/%u/status
pattern read lockers/%u/down/#
`

// fleetMosquittoConfig is docker/cloud-mosquitto/mosquitto.conf's, on a
// loopback port, except that the queue has no bound (max_queued_messages 0),
// so that a loss cannot be the broker's queue bound, and that
// max_connections is the fleet's with room for the back-end and the probes.
const fleetMosquittoConfig = `listener %d 127.0.0.1
per_listener_settings false
allow_anonymous false
password_file %s
acl_file %s
persistence true
persistence_location %s/
autosave_interval 60
max_queued_messages 0
max_inflight_messages 100
set_tcp_nodelay true
max_connections %d
log_dest stderr
log_type error
log_type warning
`

// cloudBroker is the fleet's cloud Mosquitto, across its restarts.
type cloudBroker struct {
	bin, confPath   string
	port            int
	passwords       []string // of locker i
	backendPassword string
	proc            *mosquittoProc

	cpuDone  time.Duration // CPU time of the processes that exited
	peakDone int64         // KiB: the highest VmHWM of those
}

// newCloudBroker writes the broker's password file (hashed with
// mosquitto_passwd -U), ACL and configuration for n lockers into dir.
func newCloudBroker(ctx context.Context, cfg fleetConfig, n int, dir string) (*cloudBroker, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create %q: %w", dir, err)
	}
	b := &cloudBroker{bin: cfg.mosquitto, confPath: filepath.Join(dir, "mosquitto.conf"), backendPassword: newPassword()}
	var pw strings.Builder
	fmt.Fprintf(&pw, "backend:%s\n", b.backendPassword)
	for i := range n {
		b.passwords = append(b.passwords, newPassword())
		fmt.Fprintf(&pw, "%s:%s\n", lockerID(i), b.passwords[i])
	}
	passwd, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	if err := os.WriteFile(passwd, []byte(pw.String()), 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the password file: %w", err)
	}
	if out, err := exec.CommandContext(ctx, cfg.passwd, "-U", passwd).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mosquitto_passwd -U %s: %w\n%s", passwd, err, out)
	}
	var err error
	if b.port, err = freePort(); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(fleetMosquittoConfig, b.port, passwd, acl, dir, n+16)
	if os.Geteuid() == 0 {
		conf += "user root\n" // as root it would switch to the user mosquitto
	}
	if err := os.WriteFile(acl, []byte(fleetACL), 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the ACL file: %w", err)
	}
	if err := os.WriteFile(b.confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the mosquitto config: %w", err)
	}
	return b, nil
}

func newPassword() string { return rand.Text() }

func (b *cloudBroker) start(ctx context.Context, sup *supervisor) error {
	p, err := sup.runMosquitto(ctx, b.bin, b.confPath, b.port)
	if err != nil {
		return fmt.Errorf("cloud mosquitto: %w", err)
	}
	b.proc = p
	return nil
}

// stop sends SIGTERM and waits until the broker has written its persistence
// file and exited. Mosquitto 2.0 handles SIGTERM only at its next network
// event, so stop connects to it every 20 ms until it does.
func (b *cloudBroker) stop() error {
	p := b.proc
	if m, err := readMemory(p.pid()); err == nil {
		b.peakDone = max(b.peakDone, m.peak)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("cannot stop the cloud broker: %w", err)
	}
	deadline := time.After(waitLimit)
	for {
		select {
		case <-p.exited:
			st := p.cmd.ProcessState
			b.cpuDone += st.UserTime() + st.SystemTime()
			return nil
		case <-deadline:
			return fmt.Errorf("the cloud broker did not exit within %s of SIGTERM; its persistence may be stale: %w", waitLimit, p.exitErr())
		case <-time.After(20 * time.Millisecond):
			if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
				c.Close() // only a wake-up
			}
		}
	}
}

// peakAndCPU returns the highest VmHWM (KiB) of the broker's processes and
// their CPU time, the running one's included.
func (b *cloudBroker) peakAndCPU() (int64, time.Duration) {
	peak, cpu := b.peakDone, b.cpuDone
	if m, err := readMemory(b.proc.pid()); err == nil {
		peak = max(peak, m.peak)
	}
	if c, err := procCPU(b.proc.pid()); err == nil {
		cpu += c
	}
	return peak, cpu
}

// procCPU returns utime + stime of /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read the CPU time of pid %d (Linux only): %w", pid, err)
	}
	_, rest, _ := strings.Cut(string(b), ") ") // after the command name, from field 3
	var utime, stime int64
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short /proc/%d/stat", pid, pid)
	}
	if _, err := fmt.Sscan(f[11]+" "+f[12], &utime, &stime); err != nil {
		return 0, fmt.Errorf("pid %d: bad utime or stime in /proc/%d/stat: %w", pid, pid, err)
	}
	const clockTick = 100 // USER_HZ, /proc's unit on Linux
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}

// consumer is the back-end's consumer of the fleet's events: a persistent
// session subscribed to lockers/+/up/# with QoS 1. It counts each event by
// locker and event id.
type consumer struct {
	password string
	cli      *paho.Client

	mu       sync.Mutex
	seen     map[string]*receipt // by eventKey
	distinct int
}

type receipt struct {
	n           int       // times received
	redelivered int       // of which again with the DUP flag: the broker's resends
	first       time.Time // first arrival
}

func eventKey(locker, eventID string) string { return locker + "/" + eventID }

const consumerID, consumerFilter = "fleet-backend", "lockers/+/up/#"

// consumerReceiveMax bounds the events in flight to the consumer, as
// lockyctl watch does.
const consumerReceiveMax = 100

func newConsumer(ctx context.Context, addr, password string) (*consumer, error) {
	c := &consumer{password: password, seen: map[string]*receipt{}}
	if _, err := c.connect(ctx, addr, true); err != nil {
		return nil, err
	}
	return c, nil
}

// connect connects the consumer's session, always with clean start off:
// Mosquitto 2.0.11 does not save a session begun with clean start on, even
// with an expiry, when it stops. The first time, it subscribes.
func (c *consumer) connect(ctx context.Context, addr string, first bool) (*paho.Connack, error) {
	ctx, cancel := context.WithTimeout(ctx, answerLimit)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("back-end consumer: cannot reach the cloud broker: %w", err)
	}
	cli := paho.NewClient(paho.ClientConfig{Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.receive}})
	expiry, recvMax := uint32(3600), uint16(consumerReceiveMax)
	ca, err := cli.Connect(ctx, &paho.Connect{ClientID: consumerID, CleanStart: false, KeepAlive: 30,
		Username: "backend", UsernameFlag: true, Password: []byte(c.password), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax}})
	if err != nil {
		conn.Close() // the error says why
		return nil, fmt.Errorf("back-end consumer: MQTT connect to %s: %w", addr, err)
	}
	c.cli = cli
	if !first {
		return ca, nil
	}
	sa, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: consumerFilter, QoS: 1}}})
	if err != nil {
		return ca, fmt.Errorf("back-end consumer: subscribe %s: %w", consumerFilter, err)
	}
	if len(sa.Reasons) == 0 || sa.Reasons[0] >= 0x80 {
		return ca, fmt.Errorf("back-end consumer: subscribe %s refused (check the ACL's user backend): reasons %v", consumerFilter, sa.Reasons)
	}
	return ca, nil
}

// reconnect resumes the session on the restarted broker, which must have
// kept it (persistence).
func (c *consumer) reconnect(ctx context.Context, addr string) error {
	disconnect(c.cli)
	ca, err := c.connect(ctx, addr, false)
	if err != nil {
		return err
	}
	if !ca.SessionPresent {
		return fmt.Errorf("the restarted cloud broker lost the back-end consumer's session: check its persistence (persistence_location)")
	}
	return nil
}

func (c *consumer) close() { disconnect(c.cli) }

func (c *consumer) receive(pr paho.PublishReceived) (bool, error) {
	now := time.Now()
	rest, ok := strings.CutPrefix(pr.Packet.Topic, "lockers/")
	id, _, _ := strings.Cut(rest, "/")
	var ev struct {
		EventID string `json:"event_id"`
	}
	if !ok || json.Unmarshal(pr.Packet.Payload, &ev) != nil || ev.EventID == "" {
		return true, nil // not an event
	}
	key := eventKey(id, ev.EventID)
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.seen[key]
	if r == nil {
		r = &receipt{first: now}
		c.seen[key] = r
		c.distinct++
	}
	r.n++
	if r.n > 1 && pr.Packet.Duplicate() {
		r.redelivered++
	}
	return true, nil
}

func (c *consumer) distinctNow() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.distinct
}

// waitDistinct waits until the consumer has seen target distinct events.
func (c *consumer) waitDistinct(ctx context.Context, target int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for c.distinctNow() < target {
		if time.Now().After(deadline) {
			return fmt.Errorf("the back-end consumer has %d distinct events after %s; want %d (-fleet-limit)", c.distinctNow(), limit, target)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// waitKeys waits until every one of keys has arrived, or none for
// stallLimit (the rest are lost), and returns the last first arrival.
func (c *consumer) waitKeys(ctx context.Context, keys []string, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		missing, last := c.scan(keys)
		switch {
		case missing == 0:
			return last, nil
		case time.Since(last) > stallLimit && !last.IsZero():
			return last, nil // lost: the report says how many
		case time.Now().After(deadline):
			return last, fmt.Errorf("%d of %d events not at the back-end consumer after %s (-fleet-limit)", missing, len(keys), limit)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return last, err
		}
	}
}

// scan returns how many of keys have not arrived, and the latest first
// arrival of those that have.
func (c *consumer) scan(keys []string) (missing int, last time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		r := c.seen[k]
		if r == nil {
			missing++
		} else if r.first.After(last) {
			last = r.first
		}
	}
	return missing, last
}

// countAfter returns how many of keys first arrived after t.
func (c *consumer) countAfter(keys []string, t time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range keys {
		if r := c.seen[k]; r != nil && r.first.After(t) {
			n++
		}
	}
	return n
}

// count returns how many of keys never arrived, how many arrived again, and
// how many of those again had the DUP flag.
func (c *consumer) count(keys []string) (lost, duplicates, redelivered int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if r := c.seen[k]; r == nil {
			lost++
		} else {
			duplicates += r.n - 1
			redelivered += r.redelivered
		}
	}
	return lost, duplicates, redelivered
}

// proxy forwards the lockers' TCP connections to the cloud broker. Paused,
// it listens no more: a locker finds the broker down and backs off. Resumed,
// it listens again on the same address.
type proxy struct {
	addr, upstream string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // accept loops and connections
}

func newProxy(upstream string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the lockers' proxy: %w", err)
	}
	p := &proxy{addr: ln.Addr().String(), upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	return p, nil
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by pause
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

// pause stops listening; the connections open stay.
func (p *proxy) pause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return nil
	}
	err := p.ln.Close()
	p.ln = nil
	if err != nil {
		return fmt.Errorf("lockers' proxy: %w", err)
	}
	return nil
}

func (p *proxy) resume() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("cannot listen again on %s for the lockers (a port taken meanwhile: run again): %w", p.addr, err)
	}
	p.serve(ln)
	return nil
}

// close stops listening, cuts every connection and waits.
func (p *proxy) close() {
	_ = p.pause() // a listener that fails to close is of no interest at the end
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

// pipe forwards one locker's connection; when either side ends, both do.
func (p *proxy) pipe(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.upstream, answerLimit)
	if err != nil {
		c.Close() // the locker sees the broker down, as it is
		return
	}
	p.track(c, true)
	defer p.track(c, false)
	done := make(chan struct{}, 2)
	go func() { copyConn(u, c); done <- struct{}{} }()
	go func() { copyConn(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	<-done
}

// copyConn copies through a small buffer of its own: io.Copy between two TCP
// connections would splice through pipes, two more file descriptors per
// direction and connection. Its error is the connection's end.
func copyConn(dst, src net.Conn) {
	buf := make([]byte, 4096)
	_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}
