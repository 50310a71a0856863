package gateway_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
)

// TestSystemdSocketActivation runs the gateway binary as systemd runs it
// from docker/locky-gateway.socket: the listening sockets created by the
// test, passed as fds 3 and 4 with LISTEN_FDS, LISTEN_PID and
// LISTEN_FDNAMES. The gateway serves on them and not on its configured
// addresses, and because the test keeps its own copy, as systemd does, a
// client connecting while the gateway restarts waits in the backlog and is
// answered by the next process.
func TestSystemdSocketActivation(t *testing.T) {
	bin := gatewaytest.Build(t, "", "")
	// The configured addresses are held busy by the test: the gateway
	// starts only if it binds neither.
	configured := map[string]string{"mqtt": listen(t).Addr().String(), "http": listen(t).Addr().String()}
	sockets := map[string]net.Listener{"mqtt": listen(t), "http": listen(t)}
	files := socketFiles(t, sockets, "http", "mqtt") // not in the order of the flags: matched by name

	t.Run("serves on the sockets passed", func(t *testing.T) {
		p := startActivated(t, bin, t.TempDir(), configured, files, "http:mqtt", "--mqtt-max-per-addr", "1", "--mqtt-connect-timeout", "1h")
		if p.MQTT != sockets["mqtt"].Addr().String() || p.HTTP != sockets["http"].Addr().String() {
			t.Errorf("the gateway is ready on mqtt %s, http %s; want the sockets passed, mqtt %s, http %s",
				p.MQTT, p.HTTP, sockets["mqtt"].Addr(), sockets["http"].Addr())
		}
		for _, name := range []string{"mqtt", "http"} {
			if !strings.Contains(p.Problems(), `"socket":"`+name+`"`) || !strings.Contains(p.Problems(), configured[name]) {
				t.Errorf("no warning that the %s socket passed is not at the configured %s; got:\n%s", name, configured[name], p.Problems())
			}
		}
		resp, err := http.Get("http://" + sockets["http"].Addr().String() + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz on the socket passed: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /healthz: %s; want 200", resp.Status)
		}
		gatewaytest.Connect(t, sockets["mqtt"].Addr().String())
		// The broker's limits hold on the socket passed: a second
		// connection from this address is closed at once (and not by the
		// CONNECT deadline, an hour away).
		conn, err := net.Dial("tcp", sockets["mqtt"].Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.SetReadDeadline(time.Now().Add(gatewaytest.WaitLimit)); err != nil { // a hang guard
			t.Fatal(err)
		}
		if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("a second connection with --mqtt-max-per-addr 1: read %d bytes, %v; want it closed (EOF)", n, err)
		}
	})

	t.Run("a client connecting during a restart waits for the next process", func(t *testing.T) {
		dataDir := t.TempDir()
		p := startActivated(t, bin, dataDir, configured, files, "http:mqtt")
		if err := p.Stop(); err != nil {
			t.Fatalf("the gateway stopped with %v; want exit 0 on SIGTERM", err)
		}
		// No gateway runs: the connection waits in the backlog of the
		// socket the test holds, as systemd holds it, and so does its CONNECT.
		conn, err := net.Dial("tcp", sockets["mqtt"].Addr().String())
		if err != nil {
			t.Fatalf("connect while no gateway runs: %v; want it to wait in the backlog", err)
		}
		defer conn.Close()
		if _, err := conn.Write(connectPacket("restart-waiter")); err != nil {
			t.Fatal(err)
		}
		startActivated(t, bin, dataDir, configured, files, "http:mqtt")
		if err := conn.SetReadDeadline(time.Now().Add(gatewaytest.WaitLimit)); err != nil { // a hang guard
			t.Fatal(err)
		}
		connack := make([]byte, 4)
		if _, err := io.ReadFull(conn, connack); err != nil {
			t.Fatalf("no CONNACK from the restarted gateway: %v", err)
		}
		if want := []byte{0x20, 0x02, 0x00, 0x00}; !bytes.Equal(connack, want) {
			t.Errorf("CONNACK % x; want % x (accepted)", connack, want)
		}
	})
}

// listen returns a listening socket on a free loopback port, closed when the
// test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// socketFiles returns the sockets' descriptors in the order of names, as
// exec.Cmd.ExtraFiles passes them from fd 3 on.
func socketFiles(t *testing.T, sockets map[string]net.Listener, names ...string) []*os.File {
	t.Helper()
	var files []*os.File
	for _, name := range names {
		f, err := sockets[name].(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
	}
	return files
}

// connectPacket is an MQTT 3.1.1 CONNECT packet: clean session, keepalive 60 s.
func connectPacket(clientID string) []byte {
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(clientID))}, clientID...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// startActivated runs the gateway with files as fds 3 on and the LISTEN_*
// variables naming them, and the flags extra, and waits for its ready line. LISTEN_PID must be the
// gateway's pid, known only once it runs: a shell sets it to its own and
// execs the gateway in its place, as systemd sets it between fork and exec.
func startActivated(t *testing.T, bin, dataDir string, configured map[string]string, files []*os.File, names string, extra ...string) *gatewaytest.Process {
	t.Helper()
	args := append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin, "--data-dir", dataDir,
		"--mqtt-addr", configured["mqtt"], "--http-addr", configured["http"], "--log-format", "json"}, extra...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+names)
	return gatewaytest.StartProcess(t, cmd)
}
