package gateway_test

import (
	"bytes"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

const (
	hexKeyA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa00000000000000000000000000000001"
	hexKeyB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb00000000000000000000000000000002"

	previousMatches = "locky_store_previous_code_key_matches_total"
)

// hashedUnder is a reservation upsert whose codes are sent as hashes under
// hexKey, made with the function lockyctl hash-code uses.
func hashedUnder(t testing.TB, hexKey, msgID, id string, version uint64, door int, deposit, pickup, courier string) contract.DownMessage {
	t.Helper()
	key, err := hex.DecodeString(hexKey)
	if err != nil {
		t.Fatal(err)
	}
	h := func(code string) string { return hex.EncodeToString(store.HashCode(key, code)) }
	return contract.DownMessage{MsgID: msgID, Op: contract.OpUpsert, Reservation: &contract.Reservation{
		ID: id, Version: version, Door: door, DepositHash: h(deposit), PickupHash: h(pickup), CourierHash: h(courier)}}
}

// TestCodeKeyRotationKeepsReservations rotates a locker's code key from A to
// B: codes hashed under A keep opening their doors while A is the previous
// key, hashes the back-end re-sends under B open them too, and once A is
// removed a code the back-end never re-sent no longer opens.
func TestCodeKeyRotationKeepsReservations(t *testing.T) {
	cfg := testConfig(t)
	cfg.CodeKey = hexKeyA
	g := startGateway(t, cfg)
	c := connect(t, g.MQTTAddr(), "locky/#")
	c.MustAck("reservations", hashedUnder(t, hexKeyA, "m-1", "R1", 1, 1, "100001", "100002", "100003"))
	c.MustAck("reservations", hashedUnder(t, hexKeyA, "m-2", "R2", 1, 2, "200001", "200002", "200003"))
	g.Stop(t)

	restart := func(current, previous string) (*testGateway, *gatewaytest.Client) {
		t.Helper()
		next := cfg
		next.MQTTAddr, next.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		next.CodeKey, next.CodeKeyPrevious = current, previous
		g := startGateway(t, next)
		return g, connect(t, g.MQTTAddr(), "locky/#")
	}
	g, c = restart(hexKeyB, hexKeyA)
	if v := seriesValue(t, g, previousMatches); v != 0 {
		t.Fatalf("%s = %v at start; want 0", previousMatches, v)
	}
	c.Code("100001", "r1")
	c.Display("r1", contract.ResultOpened)
	g.SimDoor(t, 1, "close")
	c.Event(contract.EventStored, "R1", 1)
	if v := seriesValue(t, g, previousMatches); v != 1 {
		t.Fatalf("%s = %v after a code hashed under the previous key opened; want 1", previousMatches, v)
	}
	// The back-end re-sends R1 under B; R3 comes with plain codes, which the
	// locker hashes under B.
	c.MustAck("reservations", hashedUnder(t, hexKeyB, "m-3", "R1", 2, 1, "100001", "100002", "100003"))
	c.MustAck("reservations", reservation("m-4", "R3", 1, 3, "300001", "300002", "300003"))
	c.Code("100002", "r2")
	c.Display("r2", contract.ResultOpened)
	g.SimDoor(t, 1, "close")
	c.Event(contract.EventDelivered, "R1", 1)
	if v := seriesValue(t, g, previousMatches); v != 1 {
		t.Fatalf("%s = %v after a re-sent code opened; want still 1", previousMatches, v)
	}
	g.Stop(t)

	// The overlap is over: the operator removed A.
	g, c = restart(hexKeyB, "")
	c.Code("200001", "r3") // R2 was never re-sent: hashed under A only
	c.Display("r3", contract.ResultInvalidCode)
	c.Code("300001", "r4")
	c.Display("r4", contract.ResultOpened)
}

// logBuffer collects a gateway's logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newFromArgs builds a gateway as locky-gateway would from its command line
// and environment, on free ports and dataDir, and closes it again. It returns
// the logs and the error of ParseArgs or New.
func newFromArgs(t *testing.T, dataDir string, env map[string]string, args ...string) (string, error) {
	t.Helper()
	args = append([]string{"--data-dir", dataDir, "--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--sim-doors", "0"}, args...)
	cfg, _, err := gateway.ParseArgs(args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		return "", err
	}
	var logs logBuffer
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		if err := g.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	return logs.String(), err
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

func TestCodeKeyFileMustBePrivate(t *testing.T) {
	dir := t.TempDir()
	f := func(mode os.FileMode, wantErr string) {
		t.Helper()
		path := writeFile(t, dir, "code.key", hexKeyA+"\n", mode)
		_, err := newFromArgs(t, t.TempDir(), nil, "--dev=false", "--code-key-file", path)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("mode %04o: %v; want the key accepted", mode, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("mode %04o: error %v; want one containing %q", mode, err, wantErr)
		}
	}
	f(0o600, "")
	f(0o400, "")
	f(0o640, "chmod 600 "+filepath.Join(dir, "code.key"))
	f(0o604, "chmod 600 "+filepath.Join(dir, "code.key"))
	f(0o644, "(mode 0644)")

	bad := writeFile(t, dir, "short.key", "abcd\n", 0o600)
	if _, err := newFromArgs(t, t.TempDir(), nil, "--dev=false", "--code-key-file", bad); err == nil || !strings.Contains(err.Error(), "use at least 16") {
		t.Errorf("a 2-byte key file: error %v; want one saying to use at least 16 bytes", err)
	}
}

// TestSystemdCredentialIsAccepted: systemd gives a LoadCredential= file to
// the service alone, with an ACL that shows as group bits.
func TestSystemdCredentialIsAccepted(t *testing.T) {
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	path := writeFile(t, creds, "code-key", hexKeyA, 0o440)
	if _, err := newFromArgs(t, t.TempDir(), nil, "--dev=false", "--code-key-file", path); err != nil {
		t.Fatalf("a credential of mode 0440: %v; want it accepted", err)
	}
	outside := writeFile(t, t.TempDir(), "code-key", hexKeyA, 0o440)
	if _, err := newFromArgs(t, t.TempDir(), nil, "--dev=false", "--code-key-file", outside); err == nil {
		t.Fatal("a key file of mode 0440 outside the credentials directory was accepted")
	}
}

func TestCodeKeySources(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "code.key", hexKeyB, 0o600)
	conf := writeFile(t, dir, "locky.conf", "code-key-file = \""+keyFile+"\"\n", 0o600)
	f := func(args []string, env map[string]string, wantKey, wantFile string) {
		t.Helper()
		cfg, _, err := gateway.ParseArgs(args, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Errorf("ParseArgs(%q, %v): %v", args, env, err)
			return
		}
		if cfg.CodeKey != wantKey || cfg.CodeKeyFile != wantFile {
			t.Errorf("ParseArgs(%q, %v): code-key %q, code-key-file %q; want %q, %q", args, env, cfg.CodeKey, cfg.CodeKeyFile, wantKey, wantFile)
		}
	}
	env := map[string]string{"LOCKY_CODE_KEY": hexKeyA}
	f([]string{"--config", conf}, nil, "", keyFile)
	f(nil, env, hexKeyA, "")
	f([]string{"--config", conf}, env, hexKeyA, "")                        // the environment over the file
	f([]string{"--code-key-file", keyFile}, env, "", keyFile)              // a flag over the environment
	f([]string{"--config", conf, "--code-key", hexKeyA}, nil, hexKeyA, "") // a flag over the file
	f([]string{"--code-key-file", keyFile}, map[string]string{"LOCKY_CODE_KEY_FILE": "/x"}, "", keyFile)

	g := func(args []string, env map[string]string, want string) {
		t.Helper()
		_, _, err := gateway.ParseArgs(args, func(k string) string { return env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseArgs(%q, %v): error %v; want one containing %q", args, env, err, want)
		}
	}
	g([]string{"--code-key", hexKeyA, "--code-key-file", keyFile}, nil, "--code-key and --code-key-file are both set on the command line: keep one")
	g(nil, map[string]string{"LOCKY_CODE_KEY_PREVIOUS": hexKeyA, "LOCKY_CODE_KEY_PREVIOUS_FILE": keyFile}, "both set in the environment")
	g([]string{"--code-key-previous-until", "2026-12-31T23:00:00Z"}, nil, "without a previous key")
	g([]string{"--code-key-previous", hexKeyA, "--code-key-previous-until", "next week"}, nil, "RFC 3339")
	g([]string{"--code-key-previous", "abcd"}, nil, "--code-key-previous: 2 bytes; use at least 16")

	// The same key as current and previous is a rotation half done.
	if _, err := newFromArgs(t, t.TempDir(), map[string]string{"LOCKY_CODE_KEY": hexKeyA, "LOCKY_CODE_KEY_PREVIOUS": hexKeyA}); err == nil ||
		!strings.Contains(err.Error(), "the previous code key is the current one") {
		t.Errorf("the same current and previous key: error %v; want one saying so", err)
	}
}

func TestCodeKeyOnTheCommandLineIsWarnedOf(t *testing.T) {
	const warning = "/proc/PID/cmdline"
	f := func(env map[string]string, args []string, want bool) {
		t.Helper()
		logs, err := newFromArgs(t, t.TempDir(), env, args...)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		warned := strings.Contains(logs, "level=WARN") && strings.Contains(logs, warning) &&
			strings.Contains(logs, "--code-key-file") && strings.Contains(logs, "LOCKY_CODE_KEY")
		if warned != want {
			t.Errorf("%q, env %v: warned of the command line: %v; want %v; logs:\n%s", args, env, warned, want, logs)
		}
	}
	f(nil, []string{"--dev=false", "--code-key", hexKeyA}, true)
	f(nil, []string{"--dev=false", "--code-key", hexKeyB, "--code-key-previous", hexKeyA}, true)
	f(map[string]string{"LOCKY_CODE_KEY": hexKeyA}, []string{"--dev=false"}, false)
	f(nil, []string{"--code-key", hexKeyA}, false) // dev mode

	// A code key in a config file that others may read.
	dir := t.TempDir()
	private := func(mode os.FileMode, want bool) {
		t.Helper()
		conf := writeFile(t, dir, "locky.conf", "dev = false\ncode-key = "+hexKeyA+"\n", mode)
		logs, err := newFromArgs(t, t.TempDir(), nil, "--config", conf)
		if err != nil {
			t.Fatal(err)
		}
		if warned := strings.Contains(logs, "level=WARN") && strings.Contains(logs, "chmod 600"); warned != want {
			t.Errorf("code-key in a config file of mode %04o: warned %v; want %v; logs:\n%s", mode, warned, want, logs)
		}
	}
	private(0o644, true)
	private(0o600, false)
}

func TestDataDirIsPrivate(t *testing.T) {
	parent := t.TempDir()
	fresh := filepath.Join(parent, "new", "data")
	if _, err := newFromArgs(t, fresh, nil); err != nil {
		t.Fatal(err)
	}
	mode := func(path string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if m := mode(fresh); m != 0o700 {
		t.Errorf("a new data dir has mode %04o; want 0700", m)
	}

	open := filepath.Join(parent, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	logs, err := newFromArgs(t, open, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(open); m != 0o700 {
		t.Errorf("an existing data dir of mode 0755 has mode %04o after start; want 0700", m)
	}
	if !strings.Contains(logs, "made it private") || !strings.Contains(logs, "was=0755") {
		t.Errorf("the tightening is not logged:\n%s", logs)
	}

	if runtime.GOOS != "linux" {
		return
	}
	// A directory whose mode not even root may change: the gateway refuses
	// it rather than run with a readable database.
	if _, err := newFromArgs(t, "/proc/self", nil); err == nil || !strings.Contains(err.Error(), "chmod 700 /proc/self") {
		t.Errorf("a data dir that cannot be made private: error %v; want one saying to chmod 700 it", err)
	}
}
