package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.uber.org/goleak"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds a test's wait for lockyctl's output, so that a broken
// feature fails the test instead of hanging it. It is not a timing assertion.
const waitLimit = 60 * time.Second

// startLocker runs a locker's bridge and a stand-in for its store handlers:
// every downstream message is acked through the outbox, refused when its
// JSON has "fail".
func startLocker(t *testing.T, brokerURL, id string) *store.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	s := storetest.Open(t, store.Config{Path: path, CodeKey: make([]byte, 32), Logger: testenv.Logger(t)})
	local := newLocalBroker(t)
	err := local.Handle("locky/down/#", func(msg contract.Message) error {
		var m struct {
			MsgID string `json:"msg_id"`
			Fail  bool   `json:"fail"`
		}
		var refusal error
		if err := json.Unmarshal(msg.Payload, &m); err != nil || m.Fail {
			refusal = errors.New("refused by the test locker")
		}
		_, err := s.Ack(time.Now(), m.MsgID, refusal)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.New(bridge.Config{LockerID: id, URL: brokerURL, Outbox: s, Local: local, Version: "v-test", Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(context.Background()) }()
	t.Cleanup(func() { _ = b.Close(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !b.LinkUp() {
		if time.Now().After(deadline) {
			t.Fatal("the locker's bridge did not connect")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	return s
}

// newLocalBroker is a locker's broker, for a bridge under test.
func newLocalBroker(t *testing.T) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Logger: testenv.QuietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// startLockerThenStop runs a locker until it is connected, then stops it: its
// retained status turns offline.
func startLockerThenStop(t *testing.T, brokerURL, id string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db3")
	s := storetest.Open(t, store.Config{Path: path, CodeKey: make([]byte, 32)})
	b, err := bridge.New(bridge.Config{LockerID: id, URL: brokerURL, Outbox: s, Local: newLocalBroker(t), Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for !b.LinkUp() {
		if time.Now().After(deadline) {
			t.Fatal("the locker's bridge did not connect")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	_ = b.Close()
	<-done
}

// appendEvents has the locker record a reservation.stored event for each
// door; its bridge sends them to the cloud in order.
func appendEvents(t *testing.T, s *store.Store, doors ...int) {
	t.Helper()
	for _, d := range doors {
		if _, _, err := s.AppendEvent(time.Now(), contract.Event{Type: contract.EventStored, Door: d}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func lockyctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// syncBuffer is a buffer that a test may read while run writes, and await.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{} // a token after each write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wrote: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer func() {
		select {
		case b.wrote <- struct{}{}:
		default:
		}
	}()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// background is a lockyctl command running while the test goes on.
type background struct {
	t              *testing.T
	args           []string
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan int
	code           int
	exited         bool
}

func startLockyctl(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{t: t, args: args, stdout: newSyncBuffer(), stderr: newSyncBuffer(), cancel: cancel, done: make(chan int, 1)}
	go func() { b.done <- run(ctx, args, strings.NewReader(""), b.stdout, b.stderr) }()
	t.Cleanup(func() { b.stop() })
	return b
}

// await waits until what buf holds satisfies ok, or fails the test.
func (b *background) await(buf *syncBuffer, what string, ok func(string) bool) {
	b.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for !ok(buf.String()) {
		select {
		case <-buf.wrote:
		case code := <-b.done:
			b.exited, b.code = true, code
			if !ok(buf.String()) {
				b.t.Fatalf("lockyctl %q exited %d before %s; stdout:\n%s\nstderr:\n%s", b.args, code, what, b.stdout, b.stderr)
			}
		case <-deadline.C:
			b.t.Fatalf("lockyctl %q: no %s within %s; stdout:\n%s\nstderr:\n%s", b.args, what, waitLimit, b.stdout, b.stderr)
		}
	}
}

// awaitStderr waits until stderr holds s.
func (b *background) awaitStderr(s string) {
	b.t.Helper()
	b.await(b.stderr, "stderr with "+s, func(out string) bool { return strings.Contains(out, s) })
}

// awaitEvents waits until stdout holds n events and returns them.
func (b *background) awaitEvents(n int) []map[string]any {
	b.t.Helper()
	b.await(b.stdout, "events", func(out string) bool { return strings.Count(out, "\n") >= n })
	var evs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.stdout.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			b.t.Fatalf("line %q: %s", l, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// wait waits for the command to exit on its own and returns its exit code.
func (b *background) wait() int {
	b.t.Helper()
	if !b.exited {
		select {
		case b.code = <-b.done:
			b.exited = true
		case <-time.After(waitLimit):
			b.t.Fatalf("lockyctl %q did not exit within %s; stderr:\n%s", b.args, waitLimit, b.stderr)
		}
	}
	return b.code
}

// stop stops the command as Ctrl-C would and returns its exit code.
func (b *background) stop() int {
	b.cancel()
	if !b.exited {
		b.code, b.exited = <-b.done, true
	}
	return b.code
}

// checkDoors fails the test unless evs are reservation.stored events of
// locker for doors, in that order.
func checkDoors(t *testing.T, evs []map[string]any, locker string, doors ...int) {
	t.Helper()
	var got []int
	for _, ev := range evs {
		d, _ := ev["door"].(float64)
		got = append(got, int(d))
		if ev["locker"] != locker || ev["type"] != contract.EventStored {
			t.Errorf("event %v; want a reservation.stored event of %s", ev, locker)
		}
	}
	if len(got) != len(doors) {
		t.Fatalf("got events for doors %v; want %v", got, doors)
	}
	for i := range doors {
		if got[i] != doors[i] {
			t.Fatalf("got events for doors %v; want %v", got, doors)
		}
	}
}

func TestSend(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	startLocker(t, cloud.URL(), "L1")
	f := func(wantCode int, wantOut string, args ...string) {
		t.Helper()
		code, out, errOut := lockyctl(t, append([]string{"--url", cloud.URL(), "--timeout", "10s"}, args...)...)
		if code != wantCode || !strings.Contains(out, wantOut) {
			t.Errorf("lockyctl %v: got exit %d, stdout %q, stderr %q; want exit %d and stdout with %q",
				args, code, out, errOut, wantCode, wantOut)
		}
	}
	f(0, `"msg_id":"m-1","ok":true`, "send-reservation", "--locker", "L1", "--json", `{"msg_id":"m-1","op":"upsert"}`)
	f(0, `"msg_id":"ctl-`, "send-door", "--locker", "L1", "--json", `{"op":"upsert","door":{"id":1}}`)
	f(0, `"ok":true`, "send-command", "--locker", "L1", "--json", `{"command":"open_door","door":1}`)
	f(0, `"msg_id":"m-2","ok":true`, "send", "--locker", "L1", "--entity", "partners", "--json", `{"msg_id":"m-2"}`)
	f(1, `"msg_id":"m-3","ok":false`, "send-reservation", "--locker", "L1", "--json", `{"msg_id":"m-3","fail":true}`)
	f(2, ``, "send", "--locker", "L1", "--json", `{}`)                           // no entity
	f(2, ``, "send-door", "--locker", "L1/x", "--json", `{}`)                    // bad id
	f(2, ``, "send-door", "--locker", "L1", "--json", `[1]`)                     // not an object
	f(2, ``, "frobnicate")                                                       // unknown command
	f(2, ``, "--url", "http://x", "send-door", "--locker", "L1", "--json", `{}`) // bad URL

	// The connection flags after the command, as well.
	code, out, errOut := lockyctl(t, "send-door", "--locker", "L1", "--url", cloud.URL(), "--json", `{"msg_id":"m-4"}`, "--timeout", "10s")
	if code != 0 || !strings.Contains(out, `"msg_id":"m-4","ok":true`) {
		t.Errorf("send-door with the flags after it: got exit %d, stdout %q, stderr %q; want 0 and the ack", code, out, errOut)
	}
}

// TestSendTimeout checks that a send nobody acks says why, from what the
// broker knows of the locker.
func TestSendTimeout(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	startLockerThenStop(t, cloud.URL(), "L3")
	stuck := gatewaytest.Connect(t, cloud.Addr)
	stuck.PublishWith(&paho.Publish{Topic: "lockers/L9/status", QoS: 1, Retain: true, Payload: []byte(`{"state":"online","at":"2026-01-02T03:04:05Z"}`)})
	f := func(locker, want string) {
		t.Helper()
		code, _, errOut := lockyctl(t, "send-door", "--url", cloud.URL(), "--timeout", "2s", "--locker", locker, "--json", `{"op":"upsert"}`)
		if code != 1 || !strings.Contains(errOut, "no ack") || !strings.Contains(errOut, want) {
			t.Errorf("send to %s: got exit %d, stderr %q; want 1 and a timeout message with %q", locker, code, errOut, want)
		}
	}
	f("nobody", "no locker nobody ever connected to "+cloud.URL())
	f("L3", "it is offline; the broker keeps the message in the locker's session")
	f("L9", "though it is online (since 2026-01-02T03:04:05Z)")
}

func TestWatch(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	s := startLocker(t, cloud.URL(), "L1")
	w := startLockyctl(t, "--url", cloud.URL(), "watch", "--locker", "L1", "--count", "3")
	w.awaitStderr("watching lockers/L1/up/events")
	appendEvents(t, s, 1, 2, 3)
	if code := w.wait(); code != 0 {
		t.Fatalf("watch --count 3: exit %d; stderr:\n%s", code, w.stderr)
	}
	checkDoors(t, w.awaitEvents(3), "L1", 1, 2, 3)
}

// TestWatchMissesNothingWhileAway stops watch, has the locker send events
// meanwhile, and starts it again under the same client id: it prints every
// one of them, in order, and nothing it had printed already.
func TestWatchMissesNothingWhileAway(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	s := startLocker(t, cloud.URL(), "L1")
	observer := gatewaytest.Connect(t, cloud.Addr, "lockers/L1/up/events")
	args := []string{"watch", "--url", cloud.URL(), "--client-id", "backend-1", "--locker", "L1"}

	w := startLockyctl(t, args...)
	w.awaitStderr("a new session, kept 168h0m0s after a disconnect")
	appendEvents(t, s, 1)
	checkDoors(t, w.awaitEvents(1), "L1", 1)
	if code := w.stop(); code != 0 {
		t.Fatalf("watch stopped: exit %d; stderr:\n%s", code, w.stderr)
	}

	appendEvents(t, s, 2, 3, 4, 5, 6)
	all := func([]byte) bool { return true }
	observer.AwaitCount("lockers/L1/up/events", all, 6) // the broker has them: it queues them for backend-1

	w = startLockyctl(t, args...)
	w.awaitStderr("its session resumed")
	checkDoors(t, w.awaitEvents(5), "L1", 2, 3, 4, 5, 6)
	appendEvents(t, s, 7)
	checkDoors(t, w.awaitEvents(6), "L1", 2, 3, 4, 5, 6, 7)
	if code := w.stop(); code != 0 {
		t.Fatalf("watch stopped: exit %d; stderr:\n%s", code, w.stderr)
	}
}

// TestWatchSurvivesABrokerRestart restarts the cloud broker under a
// running watch: it reconnects, resumes its session and goes on printing.
func TestWatchSurvivesABrokerRestart(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	s := startLocker(t, cloud.URL(), "L1")
	w := startLockyctl(t, "--url", cloud.URL(), "watch", "--client-id", "backend-2")
	w.awaitStderr("watching lockers/+/up/events")
	appendEvents(t, s, 1)
	checkDoors(t, w.awaitEvents(1), "L1", 1)

	cloud.Restart()
	// Mosquitto 2.0.11 queues nothing for a session that was connected when
	// it stopped until that session reconnects: the events come after.
	w.awaitStderr("reconnected to " + cloud.URL() + ": session resumed")
	appendEvents(t, s, 2, 3)
	checkDoors(t, w.awaitEvents(3), "L1", 1, 2, 3)
	if code := w.stop(); code != 0 {
		t.Fatalf("watch stopped: exit %d; stderr:\n%s", code, w.stderr)
	}
}

// TestWatchTakeover starts a second watch with the first one's client id:
// the second takes the session over and the first exits saying so. The
// broker is mochi, which says so with a DISCONNECT (Mosquitto 2.0 closes
// the older connection without a word).
func TestWatchTakeover(t *testing.T) {
	cloud := startMochiCloud(t)
	s := startLocker(t, cloud, "L1")
	args := []string{"watch", "--url", cloud, "--client-id", "backend-3"}
	first := startLockyctl(t, args...)
	first.awaitStderr("watching")
	second := startLockyctl(t, args...)
	second.awaitStderr("watching")
	if code := first.wait(); code != exitFail || !strings.Contains(first.stderr.String(), `another consumer connected with client id "backend-3"`) {
		t.Errorf("the first watch: exit %d, stderr:\n%s\nwant 1 and a message saying its session was taken over", code, first.stderr)
	}
	appendEvents(t, s, 1)
	checkDoors(t, second.awaitEvents(1), "L1", 1)
}

// TestWatchTakeoverUnsaid runs two watches with one client id on
// Mosquitto 2.0, which closes the older connection without saying why: they
// take the session from each other, slower and slower, and say what may
// cause it.
func TestWatchTakeoverUnsaid(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	args := []string{"watch", "--url", cloud.URL(), "--client-id", "backend-5"}
	first := startLockyctl(t, args...)
	first.awaitStderr("watching")
	second := startLockyctl(t, args...)
	first.awaitStderr(`is another watch running with client id "backend-5"?`)
	for _, w := range []*background{first, second} {
		if code := w.stop(); code != 0 {
			t.Errorf("watch stopped: exit %d; stderr:\n%s", code, w.stderr)
		}
	}
}

// startMochiCloud runs a mochi broker on a free port that lets anybody in,
// as a cloud broker, and returns its URL.
func startMochiCloud(t *testing.T) string {
	t.Helper()
	srv := testenv.StartMochi(t)
	l := listeners.NewTCP(listeners.Config{ID: "cloud", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	srv.Listeners.Serve(l.ID(), srv.EstablishConnection)
	return "mqtt://" + l.Address()
}

func TestOnline(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	f := func(wantOut, wantErr string, args ...string) {
		t.Helper()
		code, out, errOut := lockyctl(t, args...)
		if code != 0 || out != wantOut || !strings.Contains(errOut, wantErr) {
			t.Errorf("lockyctl %q: got exit %d, stdout %q, stderr %q; want 0, stdout %q, stderr with %q", args, code, out, errOut, wantOut, wantErr)
		}
	}
	t.Setenv("LOCKYCTL_URL", cloud.URL())
	f("", "no locker is known to "+cloud.URL(), "online")

	startLockerThenStop(t, cloud.URL(), "L3")
	f("", "no locker is online (1 known, offline: lockyctl online --all lists them)", "online")

	startLocker(t, cloud.URL(), "L1")
	startLocker(t, cloud.URL(), "L2")
	code, out, errOut := lockyctl(t, "online", "--url", cloud.URL(), "--all")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{{"LOCKER", "STATE", "VERSION", "SINCE"}, {"L1", "online", "v-test"}, {"L2", "online", "v-test"}, {"L3", "offline", "-", "-"}}
	if code != 0 || len(lines) != len(want) || !strings.Contains(errOut, "2 of the 3 known lockers online") {
		t.Fatalf("online --all: got exit %d, stdout:\n%s\nstderr %q; want 0, a header and L1, L2, L3", code, out, errOut)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); len(got) != 4 || strings.Join(got[:len(w)], " ") != strings.Join(w, " ") {
			t.Errorf("line %d: %q; want it to start with %q", i, lines[i], w)
		}
	}
	code, out, _ = lockyctl(t, "online")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 3 || strings.Contains(out, "L3") {
		t.Errorf("online: got exit %d, stdout:\n%s\nwant a header and L1, L2", code, out)
	}
}

// TestNotALockersBroker points lockyctl at a locker's own local broker:
// every command says so instead of printing nothing or waiting.
func TestNotALockersBroker(t *testing.T) {
	cfg := gatewaytest.Config(t)
	g := gatewaytest.Start(t, cfg)
	local := "mqtt://" + g.MQTTAddr()
	gatewaytest.Connect(t, g.MQTTAddr(), "locky/doors/+/state").Await(contract.DoorStateTopic(1), func([]byte) bool { return true })
	f := func(args ...string) {
		t.Helper()
		code, out, errOut := lockyctl(t, append(args, "--url", local, "--timeout", "2s")...)
		if code != exitFail || out != "" || !strings.Contains(errOut, local+" is a locker's local broker") {
			t.Errorf("lockyctl %q: got exit %d, stdout %q, stderr %q; want 1 and a message saying it is a locker's local broker", args, code, out, errOut)
		}
	}
	f("online")
	f("watch", "--client-id", "backend-4")
	f("send-door", "--locker", "L1", "--json", `{"op":"upsert"}`)
}

// TestCommandLine checks the help, the usage errors and the exit codes.
func TestCommandLine(t *testing.T) {
	t.Setenv("LOCKYCTL_URL", "")
	t.Setenv("LOCKYCTL_PASSWORD", "env-secret")
	f := func(wantCode int, wantOut, wantErr string, args ...string) {
		t.Helper()
		code, out, errOut := lockyctl(t, args...)
		if code != wantCode || !strings.Contains(out, wantOut) || !strings.Contains(errOut, wantErr) ||
			(wantOut == "") != (out == "") || strings.Contains(out+errOut, "env-secret") {
			t.Errorf("lockyctl %q: got exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q, no password",
				args, code, out, errOut, wantCode, wantOut, wantErr)
		}
	}
	f(exitOK, "commands:", "", "--help")
	f(exitOK, "commands:", "", "-h")
	f(exitOK, "commands:", "", "help")
	f(exitOK, "--session-expiry", "", "help", "watch")
	f(exitOK, "--client-id id", "", "watch", "--help")
	f(exitOK, "--all", "", "online", "-h")
	f(exitOK, "--url address", "", "--url", "mqtt://x", "send-door", "--locker", "L1", "--help")
	f(exitOK, "--code-key-file file", "", "hash-code", "--help")
	f(exitUsage, "", "commands:")
	f(exitUsage, "", "unknown command \"frob\"", "frob")
	f(exitUsage, "", "unknown command \"frob\"", "help", "frob")
	f(exitUsage, "", "flag provided but not defined: -bogus\nRun 'lockyctl watch --help' for usage.", "watch", "--bogus")
	f(exitUsage, "", "flag provided but not defined: -bogus\nRun 'lockyctl --help' for usage.", "--bogus", "watch")
	f(exitUsage, "", `unexpected argument "L1"`, "online", "L1")
	f(exitUsage, "", "--url mqtt://host:port (or mqtts://), or set LOCKYCTL_URL", "online")
	f(exitUsage, "", "--url mqtt://host:port (or mqtts://), or set LOCKYCTL_URL", "watch")
	f(exitUsage, "", "--session-expiry must be positive", "watch", "--url", "mqtt://127.0.0.1:1", "--session-expiry", "0s")
	f(exitUsage, "", "--client-id may not be empty", "watch", "--url", "mqtt://127.0.0.1:1", "--client-id", "")
}

func TestBackoff(t *testing.T) {
	f := func(n int, lo, hi time.Duration) {
		t.Helper()
		for range 100 {
			if got := backoff(n); got < lo || got > hi {
				t.Fatalf("backoff(%d) = %s; want within [%s, %s]", n, got, lo, hi)
			}
		}
	}
	f(1, retryMin/2, retryMin)
	f(2, retryMin, 2*retryMin)
	f(3, 2*retryMin, 4*retryMin)
	f(100, retryMax/2, retryMax)
}

func TestRecent(t *testing.T) {
	r := newRecent(2)
	f := func(k string, want bool) {
		t.Helper()
		if got := r.add(k); got != want {
			t.Errorf("add(%q) = %t; want %t", k, got, want)
		}
	}
	f("a", true)
	f("a", false)
	f("b", true)
	f("c", true) // forgets a
	f("b", false)
	f("a", true)
}

func TestParseInterspersed(t *testing.T) {
	f := func(args []string, wantKey string, wantArgs ...string) {
		t.Helper()
		fs := newFlagSet("test")
		key := fs.String("key", "", "")
		got, err := parseInterspersed(fs, args)
		if err != nil || *key != wantKey || strings.Join(got, " ") != strings.Join(wantArgs, " ") {
			t.Errorf("parseInterspersed(%q): got --key %q, arguments %q, %v; want %q, %q", args, *key, got, err, wantKey, wantArgs)
		}
	}
	f([]string{"a", "--key", "k", "b"}, "k", "a", "b")
	f([]string{"--key=k", "a"}, "k", "a")
	f([]string{"a", "b", "-key", "k"}, "k", "a", "b")
	f([]string{"a", "--", "--key", "k"}, "", "a", "--key", "k")
	f([]string{"-", "--key", "k"}, "k", "-")
	f(nil, "")
}
