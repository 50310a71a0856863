package docker

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
)

// TestCloudMosquittoRunLocal follows docker/cloud-mosquitto/run-local.sh as a
// user would on one machine: the cloud broker it runs, a gateway and lockyctl
// started with the commands it prints, then a restart of the broker with the
// same data: the locker's retained status and a message queued in its
// persistent session while it was offline are still there.
func TestCloudMosquittoRunLocal(t *testing.T) {
	if _, err := os.Stat(testenv.MosquittoPath); err != nil {
		t.Fatalf("mosquitto is not installed (apt-get install -y mosquitto): %v", err)
	}
	for _, tool := range []string{"mosquitto_passwd", "mosquitto_sub", "mosquitto_pub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install -y mosquitto mosquitto-clients): %v", tool, err)
		}
	}
	bin := buildBinaries(t)
	tmp := t.TempDir()
	openToOthers(t, tmp) // run as root, mosquitto drops to the user mosquitto

	if os.Geteuid() == 0 {
		t.Run("refuses a DIR the user mosquitto cannot reach", func(t *testing.T) {
			closed := filepath.Join(tmp, "closed")
			if err := os.Mkdir(closed, 0o700); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), gatewaytest.WaitLimit)
			defer cancel()
			cmd := exec.CommandContext(ctx, "cloud-mosquitto/run-local.sh", filepath.Join(closed, "cloud"))
			cmd.Env = append(runLocalEnv(), "PORT="+strconv.Itoa(testenv.FreePort(t)))
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "cannot reach") {
				t.Errorf("run-local.sh under a 0700 directory: %v\n%s\nwant a refusal naming the user mosquitto", err, out)
			}
		})
	}

	dir := filepath.Join(tmp, "cloud")
	port := testenv.FreePort(t)
	cloud, printed := startRunLocal(t, dir, port)
	for _, want := range []string{"locky-gateway", "lockyctl online", "mosquitto_sub"} {
		if !slices.ContainsFunc(printed, func(l string) bool { return strings.Contains(l, want) }) {
			t.Fatalf("run-local.sh printed no %s command:\n%s", want, strings.Join(printed, "\n"))
		}
	}
	// The README shows the same commands for /tmp/locky-cloud on port 1884.
	var readme []string
	for _, b := range shBlocks(readmeSection(t, "The cloud bridge and lockyctl")) {
		readme = append(readme, joinContinued(b)...)
	}
	for _, c := range printed {
		c = strings.ReplaceAll(c, dir, "/tmp/locky-cloud")
		c = strings.ReplaceAll(c, "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:1884")
		if (strings.Contains(c, "locky-gateway") || strings.Contains(c, "export ") || strings.Contains(c, "lockyctl online")) &&
			!slices.Contains(readme, c) {
			t.Errorf("README's \"The cloud bridge and lockyctl\" lacks the command run-local.sh prints:\n%s", c)
		}
	}
	if !slices.ContainsFunc(readme, func(l string) bool { return strings.HasPrefix(l, "docker/cloud-mosquitto/run-local.sh ") }) {
		t.Errorf("README's \"The cloud bridge and lockyctl\" does not run docker/cloud-mosquitto/run-local.sh")
	}
	gwData := filepath.Join(tmp, "gateway-data")
	const locker = "locker-0001"
	status := "lockers/" + locker + "/status"

	sub := subscribe(t, printed, dir, port)
	gw := startPrintedGateway(t, printed, bin, gwData)
	sub.await(status, func(p []byte) bool { return state(p) == "online" })
	if out := lockyctl(t, printed, bin, "online"); !strings.Contains(out, locker) {
		t.Fatalf("lockyctl online lists no %s:\n%s", locker, out)
	}
	// The locker's downstream subscription works (and is in its session).
	lockyctl(t, printed, bin, "--timeout", gatewaytest.WaitLimit.String(), "send-door", "--locker", locker,
		"--json", `{"op":"upsert","door":{"id":1,"size":"M"}}`)
	if err := gw.stop(); err != nil {
		t.Fatalf("the gateway stopped with %v", err)
	}
	sub.await(status, func(p []byte) bool { return state(p) == "offline" })

	// While the locker is offline, the back-end sends it a door; the broker
	// queues it in the locker's session and acknowledges it.
	const queued = "queued-across-restart"
	backendPub(t, dir, port, "-t", "lockers/"+locker+"/down/doors",
		"-m", `{"op":"upsert","msg_id":"`+queued+`","door":{"id":2,"size":"L"}}`)
	sub.proc.stop()
	if err := cloud.stop(); err != nil {
		t.Fatalf("mosquitto stopped with %v", err)
	}
	db, err := os.Stat(filepath.Join(dir, "data/mosquitto.db"))
	if err != nil {
		t.Fatalf("mosquitto saved no persistence file: %v", err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("mosquitto")
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(db.Sys().(*syscall.Stat_t).Uid)); uid != u.Uid {
			t.Errorf("mosquitto.db belongs to uid %s; want the user mosquitto (%s)", uid, u.Uid)
		}
	}

	// The same script on the same DIR: the same logins, the same data.
	_, again := startRunLocal(t, dir, port)
	if !slices.Equal(again, printed) {
		t.Errorf("run-local.sh printed other commands on the same DIR:\n%s\nfirst:\n%s", strings.Join(again, "\n"), strings.Join(printed, "\n"))
	}
	sub = subscribe(t, printed, dir, port)
	// Nothing has published since the restart: this is the retained status
	// the broker saved.
	sub.await(status, func(p []byte) bool { return state(p) == "offline" })
	startPrintedGateway(t, printed, bin, gwData)
	sub.await("lockers/"+locker+"/up/acks", func(p []byte) bool {
		var a struct {
			MsgID string `json:"msg_id"`
			OK    bool   `json:"ok"`
		}
		return json.Unmarshal(p, &a) == nil && a.MsgID == queued && a.OK
	})
	sub.await(status, func(p []byte) bool { return state(p) == "online" })
}

// runLocalEnv is the environment without run-local.sh's variables.
func runLocalEnv() []string {
	return environ("PORT", "ADDR", "LOCKER", "BACKEND_PASSWORD", "LOCKER_PASSWORD")
}

// startRunLocal runs run-local.sh DIR with PORT=port until the test ends and
// returns once the broker listens, with the commands it printed (the lines
// indented by two spaces, continuation lines joined).
func startRunLocal(t *testing.T, dir string, port int) (*proc, []string) {
	t.Helper()
	cmd := exec.Command("cloud-mosquitto/run-local.sh", dir)
	cmd.Env = append(runLocalEnv(), "PORT="+strconv.Itoa(port))
	p := startProc(t, "run-local.sh", cmd)
	if err := testenv.WaitListening("127.0.0.1:"+strconv.Itoa(port), gatewaytest.WaitLimit, p.alive); err != nil {
		t.Fatalf("run-local.sh: %v", err)
	}
	var indented []string
	for _, l := range strings.Split(p.output(), "\n") {
		if strings.HasPrefix(l, "  ") {
			indented = append(indented, l)
		}
	}
	cmds := joinContinued(indented)
	return p, cmds
}

// joinContinued trims shell lines and joins those continued by a backslash.
func joinContinued(lines []string) []string {
	var out []string
	cont := false
	for _, l := range lines {
		l = strings.TrimSpace(l)
		next := strings.HasSuffix(l, `\`)
		l = strings.TrimSpace(strings.TrimSuffix(l, `\`))
		if cont {
			out[len(out)-1] += " " + l
		} else {
			out = append(out, l)
		}
		cont = next
	}
	return out
}

// printedCommand returns the printed command containing s.
func printedCommand(t *testing.T, printed []string, s string) string {
	t.Helper()
	for _, c := range printed {
		if strings.Contains(c, s) {
			return c
		}
	}
	t.Fatalf("run-local.sh printed no command with %q:\n%s", s, strings.Join(printed, "\n"))
	return ""
}

// shell runs a printed command line in the repository root, go run replaced
// by the binaries built in bin.
func shell(ctx context.Context, printed string, bin string) *exec.Cmd {
	for _, prog := range []string{"locky-gateway", "lockyctl"} {
		printed = strings.ReplaceAll(printed, "go run ./gateway/cmd/"+prog, filepath.Join(bin, prog))
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", printed)
	cmd.Dir = ".."
	return cmd
}

// startPrintedGateway starts the printed locker command on free local ports
// with its data in dataDir, and returns it running.
func startPrintedGateway(t *testing.T, printed []string, bin, dataDir string) *proc {
	t.Helper()
	line := printedCommand(t, printed, "./gateway/cmd/locky-gateway")
	cmd := shell(context.Background(), "exec env "+line, bin) // env execs the gateway: SIGTERM reaches it
	cmd.Env = append(environ("LOCKY_*"), "LOCKY_DATA_DIR="+dataDir,
		"LOCKY_MQTT_ADDR=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
		"LOCKY_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)))
	return startProc(t, "locky-gateway", cmd)
}

// lockyctl runs lockyctl with args after the printed export of the
// back-end's settings, and returns its output; it fails the test unless it
// exits 0.
func lockyctl(t *testing.T, printed []string, bin string, args ...string) string {
	t.Helper()
	line := printedCommand(t, printed, "export LOCKYCTL_")
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*gatewaytest.WaitLimit) // a hang guard
	defer cancel()
	cmd := shell(ctx, line+"\nexec go run ./gateway/cmd/lockyctl "+strings.Join(quoted, " "), bin)
	cmd.Env = environ("LOCKYCTL_*")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lockyctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// password returns the password run-local.sh keeps for a login.
func password(t *testing.T, dir, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, name+".password"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

func state(payload []byte) string {
	var s struct {
		State string `json:"state"`
	}
	_ = json.Unmarshal(payload, &s)
	return s.State
}

// subscriber is the printed mosquitto_sub of the back-end, recording what it
// prints ("topic payload" lines) for the test to await.
type subscriber struct {
	t    *testing.T
	proc *proc
	mu   sync.Mutex
	in   [][2]string
	ch   chan struct{}
}

// subscribe starts the printed mosquitto_sub and returns once its
// subscription is in place: it has received a probe published after it.
func subscribe(t *testing.T, printed []string, dir string, port int) *subscriber {
	t.Helper()
	export := printedCommand(t, printed, "export LOCKYCTL_")
	line := printedCommand(t, printed, "mosquitto_sub ")
	cmd := shell(context.Background(), export+"\nexec "+line, "")
	cmd.Env = environ("LOCKYCTL_*")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{t: t, ch: make(chan struct{}, 1)}
	s.proc = startProc(t, "mosquitto_sub", cmd)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			topic, payload, _ := strings.Cut(sc.Text(), " ")
			s.mu.Lock()
			s.in = append(s.in, [2]string{topic, payload})
			s.mu.Unlock()
			select {
			case s.ch <- struct{}{}:
			default:
			}
		}
	}()
	// A retained probe reaches it once it has subscribed, whenever that is;
	// then it is deleted.
	probe := "lockers/_test-probe/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	s.backendPub(dir, port, "-r", "-t", probe, "-m", "probe")
	s.await(probe, func(p []byte) bool { return string(p) == "probe" })
	s.backendPub(dir, port, "-r", "-t", probe, "-n")
	return s
}

// backendPub publishes with QoS 1 as the back-end (mosquitto_pub returns
// once the broker acknowledged it).
func (s *subscriber) backendPub(dir string, port int, args ...string) {
	s.t.Helper()
	backendPub(s.t, dir, port, args...)
}

func backendPub(t *testing.T, dir string, port int, args ...string) {
	t.Helper()
	args = append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-u", "backend", "-P", password(t, dir, "backend"), "-q", "1"}, args...)
	if out, err := exec.Command("mosquitto_pub", args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", strings.Join(args[6:], " "), err, out)
	}
}

func (s *subscriber) has(topic string, match func([]byte) bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.in {
		if m[0] == topic && match([]byte(m[1])) {
			return true
		}
	}
	return false
}

// await waits for a message on topic that match accepts.
func (s *subscriber) await(topic string, match func([]byte) bool) {
	s.t.Helper()
	deadline := time.After(gatewaytest.WaitLimit) // a hang guard, not a timing assertion
	for !s.has(topic, match) {
		select {
		case <-s.ch:
		case <-s.proc.exited:
			s.t.Fatalf("mosquitto_sub exited awaiting %s: %v", topic, s.proc.alive())
		case <-deadline:
			s.mu.Lock()
			got := make([]string, len(s.in))
			for i, m := range s.in {
				got[i] = m[0] + " " + m[1]
			}
			s.mu.Unlock()
			s.t.Fatalf("no matching message on %s within %s; received:\n%s", topic, gatewaytest.WaitLimit, strings.Join(got, "\n"))
		}
	}
}
