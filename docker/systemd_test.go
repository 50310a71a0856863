package docker

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
)

// serviceUID is the user the test runs the service as, standing for the
// unit's dynamic user (nobody's uid and nogroup's gid on Debian).
const serviceUID = 65534

// TestSystemdInstall follows the README's systemd route as a user would: it
// builds the binaries with the README's commands, runs the unit's install
// commands into a scratch root (twice, as an upgrade does), verifies the
// installed unit with systemd-analyze, and starts the gateway as systemd
// would: as an unprivileged user, reading the config and the code key from the
// credentials directory that LoadCredential= fills, in its StateDirectory,
// telling the notify socket it is ready.
func TestSystemdInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it installs as root and starts the gateway as another user, as systemd does")
	}
	for tool, pkg := range map[string]string{"systemd-analyze": "systemd", "openssl": "openssl", "install": "coreutils"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (Debian package %s): %v", tool, pkg, err)
		}
	}
	raw, err := os.ReadFile("locky-gateway.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	header := unitHeaderCommands(unit)
	blocks := shBlocks(readmeSection(t, "Run on a Raspberry Pi"))
	if len(blocks) < 2 {
		t.Fatalf("README's \"Run on a Raspberry Pi\" has %d sh blocks; want the build and the install commands", len(blocks))
	}
	if !slices.Equal(blocks[1], header) {
		t.Errorf("README's install commands differ from the unit's header:\nREADME:\n%s\nunit:\n%s",
			strings.Join(blocks[1], "\n"), strings.Join(header, "\n"))
	}

	tmp := t.TempDir()
	openToOthers(t, tmp)
	// A checkout with the binaries built by the README's commands.
	src := filepath.Join(tmp, "src")
	checkout(t, src)
	buildAsREADME(t, blocks[0], src)

	root := filepath.Join(tmp, "root")
	for _, d := range []string{"usr/local/bin", "usr/share/doc", "etc/systemd/system", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	install := installScript(t, header, root)
	runInstall(t, install, src)

	// Every file the unit names is installed; the secrets only root reads.
	for _, p := range unitPaths(unit) {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("the unit names %s, which the install commands do not install: %v", p, err)
		}
	}
	for _, p := range []string{"etc/locky/locky.conf", "etc/locky/code.key"} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("/%s is installed with owner %d and mode %04o; want root's only (0600)", p, st.Uid, fi.Mode().Perm())
		}
	}

	// The user edits the config (here, free ports); installing again, as an
	// upgrade does, keeps the config and the code key.
	conf := filepath.Join(root, "etc/locky/locky.conf")
	mqttAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	httpAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	edited := editConf(t, conf, map[string]string{"mqtt-addr": mqttAddr, "http-addr": httpAddr})
	key, err := os.ReadFile(filepath.Join(root, "etc/locky/code.key"))
	if err != nil {
		t.Fatal(err)
	}
	runInstall(t, install, src)
	if got, _ := os.ReadFile(conf); !bytes.Equal(got, edited) {
		t.Errorf("installing again replaced the edited /etc/locky/locky.conf")
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/locky/code.key")); !bytes.Equal(got, key) {
		t.Errorf("installing again replaced /etc/locky/code.key: every stored code hash would stop matching")
	}

	installed := filepath.Join(root, "etc/systemd/system/locky-gateway.service")
	raw, err = os.ReadFile(installed)
	if err != nil {
		t.Fatal(err)
	}
	unit = string(raw)
	verifyUnit(t, unit, root)
	svc := unitDirectives(unit, "Service")

	bin := filepath.Join(root, "usr/local/bin/locky-gateway")
	t.Run("the service user cannot read /etc/locky", func(t *testing.T) {
		// Without LoadCredential= the gateway would fail like this, and
		// Restart=always would loop; it also shows the test drops root.
		cmd := exec.Command(bin, "--config", conf, "--check-config")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "permission denied") {
			t.Errorf("as uid %d, --config /etc/locky/locky.conf: %v\n%s\nwant permission denied", serviceUID, err, out)
		}
	})

	t.Run("starts as the service user from its credentials", func(t *testing.T) {
		env, credDir, stateDir := systemdEnv(t, svc, root, tmp)
		notify := listenNotify(t, tmp)
		env = append(env, "NOTIFY_SOCKET="+notify.path)
		argv := execStart(t, svc, root, credDir, stateDir)
		umask := "0022"
		if v := last(svc["UMask"]); v != "" {
			umask = v
		}
		cmd := exec.Command("/bin/sh", append([]string{"-c", `umask "$0" && exec "$@"`, umask}, argv...)...)
		cmd.Env = env
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
		gw := startProc(t, "locky-gateway", cmd)

		notify.await(t, "READY=1", gw)
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /readyz: %s; want 200", resp.Status)
		}
		fi, err := os.Stat(filepath.Join(stateDir, "locky.db"))
		if err != nil {
			t.Fatalf("no database in the StateDirectory: %v", err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != serviceUID {
			t.Errorf("locky.db belongs to uid %d; want the service's %d", uid, serviceUID)
		}
		if err := gw.stop(); err != nil {
			t.Errorf("the gateway stopped with %v; want exit 0 on SIGTERM", err)
		}
		notify.await(t, "STOPPING=1", gw)
	})

	for _, want := range []string{"Type=notify", "WatchdogSec=", "DynamicUser=yes", "StateDirectory=", "ProtectSystem=strict",
		"NoNewPrivileges=yes", "Restart=always", "GOMEMLIMIT=", "LoadCredential="} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	for _, name := range strings.Fields(strings.Join(svc["Sockets"], " ")) {
		if _, err := os.Stat(filepath.Join(root, "etc/systemd/system", name)); err != nil {
			t.Errorf("the unit takes Sockets=%s, which the install commands do not install: %v", name, err)
		}
	}
}

// TestSystemdSockets: the service takes its listening sockets from socket
// units, one per name the gateway looks for (FileDescriptorName= names every
// socket of a unit), at the gateway's default addresses, and the install
// commands install and enable them; the units pass systemd-analyze verify.
// TestSystemdSocketActivation in gateway/ runs the gateway on sockets passed
// so.
func TestSystemdSockets(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is missing: apt-get install -y systemd")
	}
	raw, err := os.ReadFile("locky-gateway.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	defaults := gateway.Defaults()
	want := map[string]struct{ name, addr string }{ // by file
		"locky-gateway.socket":      {"mqtt", defaults.MQTTAddr},
		"locky-gateway-http.socket": {"http", defaults.HTTPAddr},
	}
	svc := unitDirectives(unit, "Service")
	sockets := strings.Fields(strings.Join(svc["Sockets"], " "))
	requires := strings.Fields(strings.Join(unitDirectives(unit, "Unit")["Requires"], " "))
	after := strings.Fields(strings.Join(unitDirectives(unit, "Unit")["After"], " "))
	header := strings.Join(unitHeaderCommands(unit), "\n")
	for file, w := range want {
		if !slices.Contains(sockets, file) || !slices.Contains(requires, file) || !slices.Contains(after, file) {
			t.Errorf("the service lacks %s in Sockets=%q, Requires=%q or After=%q", file, sockets, requires, after)
		}
		if !strings.Contains(header, "docker/"+file) || !regexp.MustCompile(`systemctl enable .*\b`+regexp.QuoteMeta(file)+`\b`).MatchString(header) {
			t.Errorf("the service's install commands do not install and enable %s:\n%s", file, header)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		d := unitDirectives(string(raw), "Socket")
		if got := d["ListenStream"]; len(got) != 1 || got[0] != w.addr {
			t.Errorf("%s ListenStream=%q; want the gateway's default %q", file, got, w.addr)
		}
		if got := d["FileDescriptorName"]; len(got) != 1 || got[0] != w.name {
			t.Errorf("%s FileDescriptorName=%q; want %q, the name the gateway looks for", file, got, w.name)
		}
		if got := last(d["Service"]); got != "locky-gateway.service" {
			t.Errorf("%s Service=%q; want locky-gateway.service", file, got)
		}
		if got := unitDirectives(string(raw), "Install")["WantedBy"]; !slices.Equal(got, []string{"sockets.target"}) {
			t.Errorf("%s WantedBy=%q; want sockets.target, so that it listens from boot", file, got)
		}
	}
	if len(sockets) != len(want) {
		t.Errorf("the service takes Sockets=%q; want the %d units above", sockets, len(want))
	}
	root := t.TempDir()
	bin := filepath.Join(root, "usr", "local", "bin", "locky-gateway")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil { // verify checks only that it is executable
		t.Fatal(err)
	}
	verifyUnit(t, unit, root)
}

// unitHeaderCommands returns the commands in the unit's header comment: its
// lines indented by three spaces after the #.
func unitHeaderCommands(unit string) []string {
	var cmds []string
	for _, l := range strings.Split(unit, "\n") {
		if !strings.HasPrefix(l, "#") {
			break
		}
		if c, ok := strings.CutPrefix(l, "#   "); ok {
			cmds = append(cmds, c)
		}
	}
	return cmds
}

// checkout makes dir look like the repository: a symlink to each of its
// top-level entries.
func checkout(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == ".git" {
			continue
		}
		abs, err := filepath.Abs(filepath.Join("..", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

// buildAsREADME runs the README's build commands in the repository, for this
// machine's architecture, writing the binaries into dir instead of the
// repository's root.
func buildAsREADME(t *testing.T, block []string, dir string) {
	t.Helper()
	script := strings.Join(block, "\n")
	for _, want := range []string{"GOARCH=arm64", "CGO_ENABLED=0", "-o "} {
		if !strings.Contains(script, want) {
			t.Fatalf("README's build commands lack %q:\n%s", want, script)
		}
	}
	script = strings.ReplaceAll(script, "GOARCH=arm64", "GOARCH="+runtime.GOARCH)
	script = regexp.MustCompile(`-o (\S+)`).ReplaceAllString(script, "-o "+dir+"/$1")
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("README's build commands: %v\n%s\n%s", err, script, out)
	}
}

var rootedPath = regexp.MustCompile(`(^|[\s>(])/`)

// installScript is the unit header's commands with every absolute path moved
// under root; the systemctl and journalctl lines need a running systemd.
func installScript(t *testing.T, header []string, root string) string {
	t.Helper()
	var lines []string
	for _, l := range header {
		if strings.HasPrefix(l, "systemctl ") || strings.HasPrefix(l, "journalctl ") {
			continue
		}
		lines = append(lines, rootedPath.ReplaceAllString(l, "${1}"+root+"/"))
	}
	if len(lines) == 0 {
		t.Fatal("the unit's header has no install commands")
	}
	return "umask 022\n" + strings.Join(lines, "\n")
}

func runInstall(t *testing.T, script, dir string) {
	t.Helper()
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the unit's install commands: %v\n%s\n%s", err, script, out)
	}
}

// unitPaths returns the absolute paths the unit's directives name (the
// binary, the credentials' sources, the documentation).
func unitPaths(unit string) []string {
	var paths []string
	for _, l := range strings.Split(unit, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		for _, m := range regexp.MustCompile(`[=:](/[\w./-]+)`).FindAllStringSubmatch(l, -1) {
			paths = append(paths, filepath.Clean(m[1]))
		}
	}
	return paths
}

// editConf sets options of a config file as its user would, each on the line
// that sets it, and returns the new content.
func editConf(t *testing.T, path string, set map[string]string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(k) + ` = .*$`)
		if !re.Match(raw) {
			t.Fatalf("%s has no line setting %s", path, k)
		}
		raw = re.ReplaceAll(raw, []byte(k+" = "+strconv.Quote(v)))
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return raw
}

// verifyUnit runs systemd-analyze verify on the installed unit, its
// ExecStart pointing at the binary installed under root, and on the socket
// units it takes (Sockets=), read from this directory.
func verifyUnit(t *testing.T, unit, root string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(ExecStart=)(/\S+)`)
	if !re.MatchString(unit) {
		t.Fatal("the unit has no ExecStart= with an absolute path")
	}
	dir := t.TempDir()
	local := filepath.Join(dir, "locky-gateway.service")
	if err := os.WriteFile(local, []byte(re.ReplaceAllString(unit, "${1}"+root+"${2}")), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", local}
	for _, name := range strings.Fields(strings.Join(unitDirectives(unit, "Service")["Sockets"], " ")) {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("the unit takes Sockets=%s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, filepath.Join(dir, name))
	}
	out, err := exec.Command("systemd-analyze", args...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// unitDirectives returns the directives of a section, continuation lines
// joined, each name with its values in order.
func unitDirectives(unit, section string) map[string][]string {
	d := map[string][]string{}
	in := false
	for _, l := range strings.Split(strings.ReplaceAll(unit, "\\\n", " "), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "["):
			in = l == "["+section+"]"
		case in && l != "" && !strings.HasPrefix(l, "#"):
			if k, v, ok := strings.Cut(l, "="); ok {
				d[k] = append(d[k], v)
			}
		}
	}
	return d
}

func last(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// systemdEnv prepares what systemd gives a DynamicUser service before it
// starts it: the credentials directory (LoadCredential=: a copy of each file,
// 0400, owned by the service's user, in a directory only it can read), the
// StateDirectory owned by the user, and the environment (Environment=, the
// watchdog's interval).
func systemdEnv(t *testing.T, svc map[string][]string, root, tmp string) (env []string, credDir, stateDir string) {
	t.Helper()
	if last(svc["DynamicUser"]) != "yes" {
		t.Fatal("the unit does not run as a DynamicUser")
	}
	credDir = filepath.Join(tmp, "run/credentials/locky-gateway.service")
	if err := os.MkdirAll(credDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, lc := range svc["LoadCredential"] {
		id, src, ok := strings.Cut(lc, ":")
		if !ok || !filepath.IsAbs(src) {
			t.Fatalf("LoadCredential=%s: want ID:/absolute/path", lc)
		}
		raw, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatalf("LoadCredential=%s: the service would not start: %v", lc, err)
		}
		dst := filepath.Join(credDir, id)
		if err := os.WriteFile(dst, raw, 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dst, serviceUID, serviceUID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(credDir, 0o500); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(credDir, serviceUID, serviceUID); err != nil {
		t.Fatal(err)
	}

	name := last(svc["StateDirectory"])
	if name == "" {
		t.Fatal("the unit has no StateDirectory=")
	}
	mode := uint64(0o755)
	if m := last(svc["StateDirectoryMode"]); m != "" {
		var err error
		if mode, err = strconv.ParseUint(m, 8, 32); err != nil {
			t.Fatalf("StateDirectoryMode=%s: %v", m, err)
		}
	}
	stateDir = filepath.Join(root, "var/lib", name)
	if err := os.Mkdir(stateDir, os.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(stateDir, os.FileMode(mode)); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.Chown(stateDir, serviceUID, serviceUID); err != nil {
		t.Fatal(err)
	}

	env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		"CREDENTIALS_DIRECTORY=" + credDir, "STATE_DIRECTORY=" + stateDir}
	for _, e := range svc["Environment"] {
		env = append(env, strings.Fields(e)...)
	}
	if w := last(svc["WatchdogSec"]); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil {
			t.Fatalf("WatchdogSec=%s: %v", w, err)
		}
		env = append(env, fmt.Sprintf("WATCHDOG_USEC=%d", d.Microseconds()))
	}
	return env, credDir, stateDir
}

// execStart returns the unit's ExecStart as systemd runs it: the variables it
// names expanded, the binary under root.
func execStart(t *testing.T, svc map[string][]string, root, credDir, stateDir string) []string {
	t.Helper()
	line := last(svc["ExecStart"])
	vars := map[string]string{"CREDENTIALS_DIRECTORY": credDir, "STATE_DIRECTORY": stateDir}
	line = os.Expand(line, func(k string) string {
		v, ok := vars[k]
		if !ok {
			t.Fatalf("ExecStart uses $%s, which this test does not set as systemd would", k)
		}
		return v
	})
	argv := strings.Fields(line)
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) {
		t.Fatalf("ExecStart=%s: want an absolute path", line)
	}
	argv[0] = filepath.Join(root, argv[0])
	return argv
}

// notifySocket is the socket of Type=notify, where the service tells
// systemd its state.
type notifySocket struct {
	path string
	got  chan string
}

func listenNotify(t *testing.T, tmp string) *notifySocket {
	t.Helper()
	dir := filepath.Join(tmp, "run/systemd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: filepath.Join(dir, "notify"), got: make(chan string, 16)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := os.Chmod(n.path, 0o777); err != nil { // the service's user sends
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.got)
				return
			}
			for _, l := range strings.Split(string(buf[:k]), "\n") {
				n.got <- l
			}
		}
	}()
	return n
}

// await waits for the service to send state, failing if it exits first.
func (n *notifySocket) await(t *testing.T, state string, p *proc) {
	t.Helper()
	deadline := time.After(gatewaytest.WaitLimit) // a hang guard, not a timing assertion
	for {
		select {
		case l, ok := <-n.got:
			if !ok {
				t.Fatalf("the notify socket closed before %s", state)
			}
			if l == state {
				return
			}
		case <-p.exited:
			// What it sent before it exited is queued on the socket before
			// this end-of-test marker.
			const marker = "TEST-MARKER=1"
			c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.path, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Write([]byte(marker))
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			for l := range n.got {
				switch l {
				case state:
					return
				case marker:
					t.Fatalf("no %s on the notify socket: %v", state, p.alive())
				}
			}
			t.Fatalf("the notify socket closed before %s", state)
		case <-deadline:
			t.Fatalf("no %s on the notify socket within %s", state, gatewaytest.WaitLimit)
		}
	}
}

// TestBoardsDropInGrantsTheAdapter: the drop-in for lock boards turns the
// unit's PrivateDevices off only to allow exactly the adapter, in the dialout
// group, and hands the gateway its door map; unit and drop-in together pass
// systemd-analyze verify.
func TestBoardsDropInGrantsTheAdapter(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is missing: apt-get install -y systemd")
	}
	unit, err := os.ReadFile("locky-gateway.service")
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile("locky-gateway-boards.conf")
	if err != nil {
		t.Fatal(err)
	}
	d := unitDirectives(string(dropIn), "Service")
	want := map[string]string{
		"PrivateDevices": "no", "DevicePolicy": "closed", "SupplementaryGroups": "dialout",
		"LoadCredential": "doors.map:/etc/locky/doors.map",
	}
	for k, v := range want {
		if got := d[k]; len(got) != 1 || got[0] != v {
			t.Errorf("drop-in %s=%q; want %q", k, got, v)
		}
	}
	if got := d["DeviceAllow"]; len(got) != 1 || !strings.HasPrefix(got[0], "/dev/serial/by-id/") || !strings.HasSuffix(got[0], " rw") {
		t.Errorf("drop-in DeviceAllow=%q; want one adapter by its /dev/serial/by-id/ path, rw", got)
	}
	env := strings.Join(d["Environment"], " ")
	if !strings.Contains(env, "LOCKY_DOOR_MAP=%d/doors.map") || !strings.Contains(env, "LOCKY_SIM_DOORS=0") {
		t.Errorf("drop-in Environment=%q; want LOCKY_DOOR_MAP=%%d/doors.map and LOCKY_SIM_DOORS=0", env)
	}
	// A drop-in's [Service] lines apply after the unit's: verify them so.
	_, service, _ := strings.Cut(string(dropIn), "[Service]\n")
	combined := strings.Replace(string(unit), "\n[Install]", "\n"+service+"\n[Install]", 1)
	root := t.TempDir()
	bin := filepath.Join(root, "usr", "local", "bin", "locky-gateway")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil { // verify checks only that it is executable
		t.Fatal(err)
	}
	verifyUnit(t, combined, root)
}
