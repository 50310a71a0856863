package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestUpgradeInPlace upgrades a running gateway without systemd, as an
// operator does: the new binary moved over the one it was started from,
// then `locky-gateway upgrade`. The same process (PID) serves the new
// version on the same sockets; every MQTT connection attempted during the
// swap is answered, none refused; the door cycle open across the swap
// completes; and a broken binary is refused while the gateway goes on.
func TestUpgradeInPlace(t *testing.T) {
	dir := t.TempDir()
	// Installed as a symlink to its release, switched to the next one: the
	// gateway must start the path it was started by, not the file it was.
	for _, v := range []string{"v1", "v2"} {
		if err := os.MkdirAll(filepath.Join(dir, v), 0o755); err != nil {
			t.Fatal(err)
		}
		gatewaytest.Build(t, filepath.Join(dir, v, "locky-gateway"), v)
	}
	installed, next := filepath.Join(dir, "locky-gateway"), filepath.Join(dir, "locky-gateway.next")
	for link, target := range map[string]string{installed: "v1/locky-gateway", next: "v2/locky-gateway"} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := t.TempDir()
	p := startProcess(t, installed, dataDir)
	openForDeposit(t, p)

	dialer := startDialer(t, p.MQTT)
	// A client that never finishes its request must not stop the upgrade.
	slow, err := net.Dial("tcp", p.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("GET /status HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(dir, "v2", "locky-gateway") // runs the upgrade command whatever is installed
	if err := os.Rename(next, installed); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := upgrade(t, ctl, p.HTTP)
	if code != 0 || !strings.Contains(stdout, "upgraded: pid ") || !strings.Contains(stdout, "v1 (") || !strings.Contains(stdout, "→ v2 (") {
		t.Fatalf("upgrade: exit %d, stdout %q, stderr %q; want 0 and upgraded v1 → v2", code, stdout, stderr)
	}
	select {
	case addrs := <-p.Readies():
		if addrs != [2]string{p.MQTT, p.HTTP} {
			t.Errorf("the new binary is ready on %v; want the same sockets %s, %s", addrs, p.MQTT, p.HTTP)
		}
	case <-p.Exited():
		t.Fatalf("the gateway exited during the upgrade:\n%s", p.Problems())
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("no second ready line")
	}
	st := status(t, p.HTTP)
	if st.PID != p.Pid() || st.Version != "v2" {
		t.Errorf("after the upgrade: pid %d, version %q; want the same process %d serving v2", st.PID, st.Version, p.Pid())
	}
	if n, err := dialer.stop(); err != nil || n == 0 {
		t.Errorf("MQTT connections during the upgrade: %d answered, then %v; want every one answered", n, err)
	}

	// The courier's door cycle completes on the new binary: its simulated
	// door restarts closed, so the deposit is stored; the pickup works.
	d2, err := connectDriver(p)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := d2.step(0, contract.StatusStored, 1); err != nil || s != contract.StatusDelivered {
		t.Fatalf("pickup after the upgrade: %q %v; want delivered (the deposit must have completed)", s, err)
	}

	// A binary that cannot run is refused, and v2 goes on serving.
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'exec format error: wrong architecture' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, installed); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = upgrade(t, ctl, p.HTTP)
	if code != 1 || !strings.Contains(stderr, "upgrade refused, the gateway goes on with this binary") || !strings.Contains(stderr, "wrong architecture") {
		t.Errorf("upgrade to a broken binary: exit %d, stderr %q; want 1, refused, with the binary's own error", code, stderr)
	}
	if after := status(t, p.HTTP); !after.StartedAt.Equal(st.StartedAt) || after.Version != "v2" || !after.Ready {
		t.Errorf("after the refusal: %+v; want the same v2 start (%s), ready", after, st.StartedAt)
	}

	// A binary that passes its checks but cannot be started (here it makes
	// itself not executable): the gateway starts its own binary again and
	// the command says the upgrade was refused, with why.
	vanishing := filepath.Join(dir, "vanishing")
	script := "#!/bin/sh\ncase \"$1\" in --check-config) chmod -x \"$0\" ;; esac\nexit 0\n"
	if err := os.WriteFile(vanishing, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(vanishing, installed); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = upgrade(t, ctl, p.HTTP)
	if code != 1 || !strings.Contains(stderr, "cannot start "+installed) {
		t.Errorf("upgrade to a binary that cannot be started: exit %d, stderr %q; want 1, naming it", code, stderr)
	}
	if after := status(t, p.HTTP); after.PID != st.PID || after.Version != "v2" || !after.Ready {
		t.Errorf("after the failed exec: %+v; want v2 serving again in process %d", after, st.PID)
	}
	p.Kill()
	if got := checkInvariants(t, dataDir); got["R0"] != contract.StatusDelivered {
		t.Fatalf("R0 is %q; want delivered", got["R0"])
	}
}

// upgrade runs `bin upgrade` against the gateway at httpAddr.
func upgrade(t *testing.T, bin, httpAddr string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "upgrade", "--http-addr", httpAddr, "--timeout", "60s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("upgrade: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func status(t *testing.T, httpAddr string) gateway.Status {
	t.Helper()
	st, err := readStatus(&http.Client{Timeout: 30 * time.Second}, "http://"+httpAddr+"/status")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// dialer opens an MQTT connection after another until stopped, each
// CONNECT answered by a CONNACK before the next: an upgrade that refused one
// shows as an error. A connection the old binary accepted and closed as it
// stopped is not refused: the client tries again, as a real one does.
type dialer struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	n      int
	err    error
}

func startDialer(t *testing.T, addr string) *dialer {
	ctx, cancel := context.WithCancel(context.Background())
	d := &dialer{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for i := 0; ctx.Err() == nil; i++ {
			// From 50 loopback addresses in turn: one address at this pace
			// would meet the broker's CONNECT rate limit.
			err := connectOnce(addr, net.IPv4(127, 0, 0, byte(2+i%50)))
			d.mu.Lock()
			if err != nil {
				d.err = err
				d.mu.Unlock()
				return
			}
			d.n++
			d.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { d.stop() })
	return d
}

// stop ends the dialing and returns how many connections were answered and
// the first failure.
func (d *dialer) stop() (int, error) {
	d.cancel()
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n, d.err
}

// connectOnce connects from ip, sends CONNECT and reads the CONNACK.
func connectOnce(addr string, ip net.IP) error {
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil { // a hang guard
		return err
	}
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 6}, "dialer"...)
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		return err
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return connectOnce(addr, ip) // closed by the stopping binary: again
		}
		return err
	}
	if connack[0] != 0x20 || connack[3] != 0 {
		return fmt.Errorf("CONNACK % x refused the connection from %s", connack, ip)
	}
	return nil
}

// TestUpgradeSignalsOnlyTheGateway: the PID to signal comes from whoever
// answers at the address; a process that does not hold the listening socket
// there is not signalled (SIGUSR2 would kill it).
func TestUpgradeSignalsOnlyTheGateway(t *testing.T) {
	bin := buildGateway(t)
	victim := exec.Command("sleep", "300")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(gateway.Status{PID: victim.Process.Pid, Version: "v1", Ready: true})
	}))
	defer fake.Close()
	code, _, stderr := upgrade(t, bin, strings.TrimPrefix(fake.URL, "http://"))
	if code != 1 || !strings.Contains(stderr, "does not hold the socket") {
		t.Errorf("upgrade against a fake status: exit %d, stderr %q; want 1, not signalled", code, stderr)
	}
	if err := victim.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the process the fake status named: %v; want it alive", err)
	}
}
