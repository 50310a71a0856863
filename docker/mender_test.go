package docker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// TestMenderRollout installs Artifacts of docker/mender/build-artifact.sh and
// of broken builds with Mender in standalone mode (mender install, then
// mender commit) through the update module docker/mender/locky-gateway, on a
// gateway that the module restarts through the test's supervisor: an upgrade
// keeps the state; a binary that exits at start, and one that never becomes
// ready, are rolled back automatically to the one that served before.
//
// Mender reads its update modules from /usr/share/mender/modules/v3 and the
// first Artifact name from /etc/mender/artifact_info, paths its config cannot
// move: mender runs in a private mount namespace (unshare, as root) where the
// test's own directories are mounted there, so the system is left as it was.
func TestMenderRollout(t *testing.T) {
	for _, tool := range []string{"mender", "mender-artifact", "unshare", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install mender-client mender-artifact util-linux curl): %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("mender runs in a private mount namespace (unshare --mount): run the test as root")
	}
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armv7"}[runtime.GOARCH]
	if arch == "" {
		t.Fatalf("build-artifact.sh builds no Artifact for GOARCH %s", runtime.GOARCH)
	}
	tmp := t.TempDir()
	dev := newMenderDevice(t, tmp, "locky-"+arch)

	out := filepath.Join(tmp, "artifacts")
	cmd := exec.Command("mender/build-artifact.sh", "v2", out)
	cmd.Env = append(environ("ARCHES", "DEVICE_TYPE_*"), "ARCHES="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-artifact.sh: %v\n%s", err, b)
	}
	good := filepath.Join(out, "locky-gateway-v2-"+arch+".mender")

	dev.gw.start(t)
	dev.awaitVersion(t, "v1")
	t.Run("reservation", func(t *testing.T) { // its client disconnects before the updates
		c := gatewaytest.Connect(t, dev.gw.mqttAddr, contract.TopicAcks)
		c.MustAck("reservations", gatewaytest.Reservation("m-1", "R1", 1, 3, "300001", "300002", "300003"))
	})
	dev.checkState(t)

	upgraded := t.Run("upgrade", func(t *testing.T) {
		// A touchscreen enters R1's deposit code every 20 ms through the
		// upgrade: every code gets its answer (opened, then door in use).
		codes := startCodes(t, dev.gw.mqttAddr, "300001")
		out, err := dev.mender("install", good)
		defer logIfFailed(t, "mender install", out)
		if err != nil {
			t.Fatalf("mender install: %v", err)
		}
		dev.awaitVersion(t, "v2")
		dev.checkState(t)
		entered, lost := codes.stop()
		if entered == 0 || lost != 0 {
			t.Errorf("codes entered during the upgrade: %d, never answered: %d; want some, none lost", entered, lost)
		}
		t.Logf("%d codes entered during the upgrade, %d never answered", entered, lost)
		if out, err := dev.mender("commit"); err != nil {
			t.Fatalf("mender commit: %v\n%s", err, out)
		}
		dev.checkArtifact(t, "v2")
		if b, err := exec.Command(dev.bin+".previous", "--version").CombinedOutput(); err != nil || !strings.Contains(string(b), "v1") {
			t.Errorf("locky-gateway.previous --version: %v %q; want v1", err, b)
		}
	})
	if !upgraded {
		return // the rollbacks below would go back to v1
	}

	f := func(name, script string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			art := dev.artifact(t, name, "#!/bin/sh\n"+script+"\n")
			out, err := dev.mender("install", art)
			defer logIfFailed(t, "mender install", out)
			if err == nil {
				t.Fatalf("mender install of %s succeeded; want a failure and a rollback", name)
			}
			if !strings.Contains(out, "Rolling back Artifact") {
				t.Errorf("mender install of %s did not roll back", name)
			}
			dev.awaitVersion(t, "v2")
			dev.checkState(t)
			dev.checkArtifact(t, "v2")
		})
	}
	f("exits-at-start", "exit 1")
	f("never-ready", "exec sleep 3600") // SIGTERM ends it

	if err := dev.gw.stop(); err != nil {
		t.Errorf("the gateway stopped with %v", err)
	}
	if err := store.CheckFile(filepath.Join(dev.gw.dataDir, "locky.db")); err != nil {
		t.Errorf("database check of the stopped gateway: %v", err)
	}
}

func logIfFailed(t *testing.T, what, out string) {
	if t.Failed() {
		t.Logf("%s:\n%s", what, out)
	}
}

// menderDevice is a device as Mender sees it, in the test's directory: its
// device type, Mender's data and config, the module's settings, and the
// gateway's installed binary, run by a supervisor.
type menderDevice struct {
	dir, deviceType, bin string
	gw                   *supervisor
	env                  []string
}

func newMenderDevice(t *testing.T, dir, deviceType string) *menderDevice {
	t.Helper()
	d := &menderDevice{dir: dir, deviceType: deviceType, bin: filepath.Join(dir, "bin", "locky-gateway")}
	module, err := filepath.Abs("mender/locky-gateway")
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"bin", "etc", "modules", "mender-data", "gateway-data"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(module, filepath.Join(dir, "modules", "locky-gateway")); err != nil {
		t.Fatal(err)
	}
	// v1 is built as build-artifact.sh builds v2 (sharing its build cache).
	build := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-s -w -X github.com/locky-edge/locky/gateway.Version=v1", "-o", d.bin, "../gateway/cmd/locky-gateway")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	d.gw = newSupervisor(t, d.bin, filepath.Join(dir, "gateway-data"))
	restart := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := d.gw.restart(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	t.Cleanup(restart.Close)

	files := map[string]string{
		"device_type":       "device_type=" + deviceType + "\n",
		"etc/artifact_info": "artifact_name=v1\n",
		"mender.conf":       fmt.Sprintf(`{"DeviceTypeFile": %q}`, filepath.Join(dir, "device_type")),
		"module.conf": "LOCKY_BIN=" + d.bin + "\n" +
			"LOCKY_RESTART='curl -fsS -X POST " + restart.URL + "'\n" +
			"LOCKY_READY_URL=" + d.gw.url("/readyz") + "\n" +
			"LOCKY_READY_TIMEOUT=5\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.env = append(environ("LOCKY_*"), "LOCKY_MENDER_CONF="+filepath.Join(dir, "module.conf"))
	return d
}

// mender runs mender with args in a mount namespace of its own where the
// device's directories hide /etc/mender and /usr/share/mender/modules/v3, and
// returns its output.
func (d *menderDevice) mender(args ...string) (string, error) {
	script := `set -e
mount --bind "$DIR/etc" /etc/mender
mount --bind "$DIR/modules" /usr/share/mender/modules/v3
exec mender --no-syslog --config "$DIR/mender.conf" --fallback-config "$DIR/none.conf" --data "$DIR/mender-data" "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh"}, args...)...)
	cmd.Env = append(d.env, "DIR="+d.dir)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// artifact writes an Artifact named name for the device whose locky-gateway
// is the shell script script.
func (d *menderDevice) artifact(t *testing.T, name, script string) string {
	t.Helper()
	dir := filepath.Join(d.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "locky-gateway"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	art := filepath.Join(dir, name+".mender")
	b, err := exec.Command("mender-artifact", "write", "module-image", "-T", "locky-gateway", "-t", d.deviceType,
		"-n", name, "-f", filepath.Join(dir, "locky-gateway"), "-o", art).CombinedOutput()
	if err != nil {
		t.Fatalf("mender-artifact write: %v\n%s", err, b)
	}
	return art
}

// checkArtifact checks the Artifact name Mender records as installed.
func (d *menderDevice) checkArtifact(t *testing.T, want string) {
	t.Helper()
	out, err := d.mender("--log-level", "error", "show-artifact")
	if got := strings.TrimSpace(out); err != nil || got != want {
		t.Errorf("mender show-artifact: %v %q; want %q", err, got, want)
	}
}

// awaitVersion waits until /readyz answers 200 (a bounded poll) and checks
// that the gateway serving is version.
func (d *menderDevice) awaitVersion(t *testing.T, version string) {
	t.Helper()
	deadline := time.Now().Add(gatewaytest.WaitLimit)
	for {
		code, _, err := get(d.gw.url("/readyz"))
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %v after %s", code, err, gatewaytest.WaitLimit) // the cleanup logs the gateway's output
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, metrics, err := get(d.gw.url("/metrics"))
	if want := `locky_build_info{version="` + version + `"`; err != nil || !strings.Contains(metrics, want) {
		t.Fatalf("/metrics: %v; want %s in\n%s", err, want, metrics)
	}
}

// checkState checks that the reservation upserted at the start still holds
// door 3.
func (d *menderDevice) checkState(t *testing.T) {
	t.Helper()
	_, body, err := get(d.gw.url("/api/state"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Doors []struct {
			ID          int `json:"id"`
			Reservation *struct {
				ID string `json:"id"`
			} `json:"reservation"`
		} `json:"doors"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/api/state: %v\n%s", err, body)
	}
	for _, door := range st.Doors {
		if door.ID == 3 {
			if door.Reservation == nil || door.Reservation.ID != "R1" {
				t.Errorf("door 3's reservation: %+v; want R1", door.Reservation)
			}
			return
		}
	}
	t.Errorf("/api/state has no door 3:\n%s", body)
}

func get(url string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// supervisor runs the gateway binary installed at bin, as systemd would, and
// restarts it on request: the old process stopped (SIGTERM, waited for), the
// binary then at bin started on the same data dir and ports.
type supervisor struct {
	bin, dataDir, httpAddr, mqttAddr string

	mu  sync.Mutex
	log strings.Builder      // its own lines and the output of the processes stopped
	cur *gatewaytest.Process // nil when stopped
}

func newSupervisor(t *testing.T, bin, dataDir string) *supervisor {
	s := &supervisor{bin: bin, dataDir: dataDir,
		httpAddr: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		mqttAddr: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	t.Cleanup(func() {
		if err := s.stop(); err != nil && !errors.Is(err, errNotRunning) {
			t.Logf("the gateway stopped with %v", err)
		}
		if t.Failed() {
			t.Logf("the gateway's output:\n%s", s.output())
		}
	})
	return s
}

var errNotRunning = errors.New("the gateway is not running")

func (s *supervisor) url(path string) string { return "http://" + s.httpAddr + path }

func (s *supervisor) start(t *testing.T) {
	t.Helper()
	if err := s.restart(); err != nil {
		t.Fatal(err)
	}
}

func (s *supervisor) restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil && !errors.Is(err, errNotRunning) {
		fmt.Fprintf(&s.log, "supervisor: the gateway stopped with %v\n", err)
	}
	cmd := exec.Command(s.bin, "--data-dir", s.dataDir, "--http-addr", s.httpAddr, "--mqtt-addr", s.mqttAddr)
	cmd.Env = environ("LOCKY_*")
	fmt.Fprintf(&s.log, "supervisor: starting %s\n", s.bin)
	p, err := gatewaytest.Launch(cmd)
	if err != nil {
		return err
	}
	s.cur = p
	return nil
}

func (s *supervisor) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

// stopLocked stops the gateway with SIGTERM, SIGKILL after
// gatewaytest.WaitLimit (a hang guard), and returns its exit error.
func (s *supervisor) stopLocked() error {
	p := s.cur
	if p == nil {
		return errNotRunning
	}
	s.cur = nil
	err := p.Stop()
	s.log.WriteString(p.Output())
	return err
}

func (s *supervisor) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return s.log.String()
	}
	return s.log.String() + s.cur.Output()
}
