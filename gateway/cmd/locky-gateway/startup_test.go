package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exampleKey is the code key an example configuration once published.
const exampleKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// nobody is the user a test runs the gateway as when it runs as root, whom
// file modes do not stop.
const nobody = 65534

// TestStartupFailuresSayWhatToChange starts the real binary in each broken
// situation, and runs --check-config in it too. Each start exits non-zero
// with one line that names what is wrong and the option to change, and
// nothing panics. --check-config refuses the same mistakes; a port or a
// database held right now it cannot tell from the running gateway that the
// configuration is for (the usual case when a configuration is checked), so
// a held port is a warning and a held database is not looked at.
func TestStartupFailuresSayWhatToChange(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	// Reachable for another user: the binary and a data dir of root's.
	for _, d := range []string{filepath.Dir(bin), filepath.Dir(filepath.Dir(bin)), dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	hold := func() string { // a port another program listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().String()
	}
	httpHeld, mqttHeld := hold(), hold()
	aFile := write("a-file", "")
	exampleKeyFile := write("example.key", exampleKey+"\n")
	badGraceConf := write("grace.conf", "# the grace of a used code\ngrace = 10\n")
	readOnly := filepath.Join(dir, "read-only")
	if err := os.Mkdir(readOnly, 0o700); err != nil {
		t.Fatal(err)
	}
	asUser := os.Geteuid() == 0 // root writes anywhere: run as nobody
	if !asUser {
		if err := os.Chmod(readOnly, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(readOnly, 0o700) })
	}
	held := t.TempDir()
	startProcess(t, bin, held) // a running gateway holds this data dir

	const (
		refused = iota // --check-config says the same as the start
		ok             // --check-config passes: the configuration is right
		warned         // --check-config passes with a warning naming the option
	)
	// f starts the gateway with args and env (as another user if user is set
	// and the test runs as root), then with --check-config, and wants one error
	// line saying all of want; check says what --check-config does. Each case
	// runs in its own t.Run: one start misjudged does not hide the next.
	f := func(name string, args, env []string, user bool, check int, want ...string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			all := append([]string{"--data-dir", filepath.Join(t.TempDir(), "data"),
				"--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...) // later flags win
			run := func(extra ...string) (int, string, string) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, append(all, extra...)...)
				// Without the race detector's pause before a zero exit.
				cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), env...)
				if user && asUser {
					cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
				}
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var exit *exec.ExitError
				if err != nil && !errors.As(err, &exit) {
					t.Fatalf("cannot run the gateway: %v", err)
				}
				if ctx.Err() != nil {
					t.Fatalf("the gateway did not exit: %v\n%s", ctx.Err(), stderr.String())
				}
				out := stdout.String() + stderr.String()
				if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
					t.Errorf("%q: the output shows a panic:\n%s", extra, out)
				}
				return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
			}
			// failure checks that stderr has exactly one error line, and
			// that it says all of want.
			failure := func(what, stderr string) {
				t.Helper()
				var errs []string
				for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
					if strings.Contains(line, "level=ERROR") || (strings.HasPrefix(line, "locky-gateway: ") && !strings.HasPrefix(line, "locky-gateway: warning: ")) {
						errs = append(errs, line)
					}
				}
				if len(errs) != 1 {
					t.Fatalf("%s: %d error lines; want one:\n%s", what, len(errs), stderr)
				}
				for _, w := range want {
					if !strings.Contains(errs[0], w) {
						t.Errorf("%s: the error line does not say %q:\n%s", what, w, errs[0])
					}
				}
			}

			code, _, stderr := run()
			if code == 0 {
				t.Fatalf("the start exited 0:\n%s", stderr)
			}
			failure("start", stderr)

			code, stdout, stderr := run("--check-config")
			switch check {
			case refused:
				if code == 0 {
					t.Fatalf("--check-config exited 0 (%q):\n%s", stdout, stderr)
				}
				failure("--check-config", stderr)
			case ok, warned:
				if code != 0 || strings.TrimSpace(stdout) != "configuration ok" {
					t.Fatalf("--check-config: exit %d, %q; want 0 and configuration ok:\n%s", code, stdout, stderr)
				}
				warns := 0
				for _, line := range strings.Split(stderr, "\n") {
					if strings.HasPrefix(line, "locky-gateway: warning: ") && strings.Contains(line, want[len(want)-1]) {
						warns++
					}
				}
				if n := map[int]int{ok: 0, warned: 1}[check]; warns != n {
					t.Errorf("--check-config: %d warnings naming %q; want %d:\n%s", warns, want[len(want)-1], n, stderr)
				}
			}
		})
	}
	f("HTTP port taken", []string{"--http-addr", httpHeld}, nil, false, warned,
		"cannot listen on "+httpHeld, "set --http-addr")
	f("MQTT port taken", []string{"--mqtt-addr", mqttHeld}, nil, false, warned,
		"cannot listen on "+mqttHeld, "set --mqtt-addr")
	f("data dir of a running gateway", []string{"--data-dir", held}, nil, false, ok,
		"--data-dir "+held, "another gateway", "is using this data dir")
	f("data dir is a file", []string{"--data-dir", aFile}, nil, false, refused,
		"--data-dir "+aFile+" is a file, not a directory", "set --data-dir")
	f("data dir under a file", []string{"--data-dir", filepath.Join(aFile, "data")}, nil, false, refused,
		"cannot be created: "+aFile+" is a file", "set --data-dir")
	f("data dir not writable", []string{"--data-dir", readOnly}, nil, true, refused,
		"--data-dir "+readOnly+" is not writable", "set --data-dir")
	f("duration without a unit, flag", []string{"--grace", "10"}, nil, false, refused,
		"--grace 10: a duration needs a unit: write 10m")
	f("duration without a unit, environment", nil, []string{"LOCKY_GRACE=10"}, false, refused,
		"LOCKY_GRACE=10: a duration needs a unit: write 10m")
	f("duration without a unit, config file", []string{"--config", badGraceConf}, nil, false, refused,
		badGraceConf+":2: grace = 10: a duration needs a unit: write 10m")
	f("unknown flag", []string{"--grase", "10m"}, nil, false, refused,
		"unknown option --grase: did you mean --grace?")
	f("example key outside dev mode", []string{"--dev=false"}, []string{"LOCKY_CODE_KEY=" + exampleKey}, false, refused,
		"--code-key", "example key", "openssl rand -hex 32")
	f("example key file outside dev mode", []string{"--dev=false", "--code-key-file", exampleKeyFile}, nil, false, refused,
		"--code-key-file", "example key", "openssl rand -hex 32")
	f("cloud URL without a port", []string{"--cloud-url", "mqtt://127.0.0.1"}, nil, false, refused,
		`--cloud-url "mqtt://127.0.0.1" has no port`, "mqtt://127.0.0.1:1883")
}
