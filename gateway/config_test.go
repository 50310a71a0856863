package gateway_test

import (
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/gateway"
)

func TestConfigPrecedenceFlagsOverEnvOverFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "locky.conf")
	content := "# a comment\nlocker-id = \"from-file\"\nsim-doors = 3\ngrace = 1m # trailing comment\nlog-level = warn\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LOCKY_SIM_DOORS": "5", "LOCKY_GRACE": "2m"}
	cfg, _, err := gateway.ParseArgs([]string{"--config", file, "--grace", "3m"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
	f("locker-id (file only)", cfg.LockerID, "from-file")
	f("sim-doors (env over file)", cfg.SimDoors, 5)
	f("grace (flag over env and file)", cfg.Grace, 3*time.Minute)
	f("log-level (file)", cfg.LogLevel, "warn")
	f("http-addr (default)", cfg.HTTPAddr, "127.0.0.1:8080")
}

func TestBadConfigurationsSayWhatToFix(t *testing.T) {
	dir := t.TempDir()
	f := func(args []string, fileContent, want string) {
		t.Helper()
		if fileContent != "" {
			file := filepath.Join(dir, "c.conf")
			if err := os.WriteFile(file, []byte(fileContent), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append([]string{"--config", file}, args...)
		}
		_, _, err := gateway.ParseArgs(args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseArgs(%q, %q) error %v; want one containing %q", args, fileContent, err, want)
		}
	}
	f(nil, "lockerid = x\n", `c.conf:1: unknown option "lockerid"`)
	f(nil, "just words\n", "c.conf:1: expected `name = value`")
	f(nil, "grace = soon\n", "c.conf:1: grace")
	f([]string{"--dev=false"}, "", "--code-key is required outside dev mode")
	f([]string{"--code-key", "abcd"}, "", "use at least 16")
	f([]string{"--locker-id", "a/b"}, "", "--locker-id")
	f([]string{"--cloud-url", "http://x"}, "", "want mqtt://host:port")
	f([]string{"--cloud-up", "locky/up/#"}, "", "--cloud-up")
	f([]string{"--cloud-down", "lockers/{id}/doors/#=locky/doors/#@1"}, "", "a cloud message may only land below locky/down/")
	f([]string{"--cloud-down", "lockers/{id}/code=locky/screen/code@1"}, "", "a cloud message may only land below locky/down/")
	f([]string{"--lockout-base", "2h"}, "", "--lockout-max 1h0m0s is shorter than --lockout-base")
	f([]string{"--metrics-push-url", "ftp://vm/x"}, "", "--metrics-push-url")
	f([]string{"extra"}, "", `unexpected argument "extra"`)

	// A value of the wrong kind says what the option wants, wherever it is set.
	f([]string{"--grace", "10"}, "", "--grace 10: a duration needs a unit: write 10m")
	f([]string{"--grace=soon"}, "", "--grace soon: want a duration such as 10m")
	f(nil, "grace = 10\n", "c.conf:1: grace = 10: a duration needs a unit")
	f([]string{"--sim-doors", "many"}, "", "--sim-doors many: want a whole number")
	f([]string{"--dev=maybe"}, "", "--dev maybe: want true or false")
	f([]string{"--grace"}, "", "--grace needs a value")
	// An unknown option names the nearest one, if one is near.
	f([]string{"--grase", "10m"}, "", "unknown option --grase: did you mean --grace?")
	f([]string{"-data_dir", "x"}, "", "unknown option -data_dir: did you mean --data-dir?")
	f([]string{"--sim-doors", "3", "--frobnicate"}, "", "unknown option --frobnicate (every option: --help)")
	f(nil, "lockerid = x\n", `unknown option "lockerid": did you mean locker-id?`)
	// A cloud URL without a port would bridge to 1883, the local broker's.
	f([]string{"--cloud-url", "mqtt://127.0.0.1"}, "", `--cloud-url "mqtt://127.0.0.1" has no port: write the cloud broker's, e.g. mqtt://127.0.0.1:1883`)
	f([]string{"--cloud-url", "mqtts://cloud.example"}, "", "e.g. mqtts://cloud.example:8883")
	// The example key of the documentation is no production key.
	f([]string{"--dev=false", "--code-key", exampleKey}, "", "the example key from the documentation, known to everyone: generate the locker's own with `openssl rand -hex 32`")
	f([]string{"--dev=false", "--code-key", exampleKey[:32]}, "", "the example key")
}

// exampleKey is the code key an example configuration once published.
const exampleKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestBadEnvironmentSaysWhatToFix(t *testing.T) {
	f := func(env map[string]string, want string) {
		t.Helper()
		_, _, err := gateway.ParseArgs(nil, func(k string) string { return env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseArgs with %v: error %v; want one containing %q", env, err, want)
		}
	}
	f(map[string]string{"LOCKY_GRACE": "10"}, "environment LOCKY_GRACE=10: a duration needs a unit: write 10m")
	f(map[string]string{"LOCKY_LOCKOUT_THRESHOLD": "five"}, "environment LOCKY_LOCKOUT_THRESHOLD=five: want a whole number")
	f(map[string]string{"LOCKY_DEV": "false", "LOCKY_CODE_KEY": exampleKey}, "--code-key: this is the example key")
}

// TestAMistakeIsOneLine checks that a mistake on the command line is the
// returned error alone: the flag package's own message and the usage are not
// written, and --help writes the usage.
func TestAMistakeIsOneLine(t *testing.T) {
	for _, args := range [][]string{{"--grace", "10"}, {"--nope"}, {"--grace"}} {
		var stderr strings.Builder
		_, _, err := gateway.ParseArgs(args, func(string) string { return "" }, &stderr)
		if err == nil || strings.Contains(err.Error(), "\n") || stderr.Len() != 0 {
			t.Errorf("ParseArgs(%q): error %q and output %q; want one line of error and no output", args, err, stderr.String())
		}
	}
	var stderr strings.Builder
	if _, _, err := gateway.ParseArgs([]string{"--help"}, func(string) string { return "" }, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v; want flag.ErrHelp", err)
	}
	if out := stderr.String(); !strings.Contains(out, "-grace duration") || !strings.Contains(out, "-check-config") {
		t.Errorf("--help wrote %q; want the usage with the options' types", out)
	}
	if _, _, err := gateway.ParseArgs([]string{"--dev"}, func(string) string { return "" }, io.Discard); err != nil {
		t.Errorf("a bare bool flag: %v", err)
	}
}

// TestCheckLooksAtWhatTheConfigurationNames runs the checks of
// --check-config: each mistake is refused with the option to change, and a
// good configuration passes without a change to the disk.
func TestCheckLooksAtWhatTheConfigurationNames(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	exampleFile := filepath.Join(dir, "example.key")
	if err := os.WriteFile(exampleFile, []byte(exampleKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ownFile := filepath.Join(dir, "own.key")
	if err := os.WriteFile(ownFile, []byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa00000000000000000000000000000001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	free := func() string { return "127.0.0.1:0" }
	f := func(mod func(*gateway.Config), want string) {
		t.Helper()
		cfg := gateway.Defaults()
		cfg.DataDir, cfg.MQTTAddr, cfg.HTTPAddr = filepath.Join(t.TempDir(), "data"), free(), free()
		mod(&cfg)
		_, err := gateway.Check(cfg)
		switch {
		case want == "" && err != nil:
			t.Errorf("Check: %v; want none", err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("Check: error %v; want one containing %q", err, want)
		}
	}
	f(func(*gateway.Config) {}, "")
	f(func(c *gateway.Config) { c.DataDir = file }, "--data-dir "+file+" is a file, not a directory: set --data-dir")
	f(func(c *gateway.Config) { c.DataDir = filepath.Join(file, "sub") }, "cannot be created: "+file+" is a file")
	f(func(c *gateway.Config) { c.Dev, c.CodeKeyFile = false, exampleFile }, "--code-key-file "+exampleFile+": this is the example key")
	f(func(c *gateway.Config) { c.Dev, c.CodeKeyFile = false, ownFile }, "")
	f(func(c *gateway.Config) { c.Dev, c.CodeKeyFile = false, filepath.Join(dir, "missing.key") }, "--code-key-file: cannot read the code key file")
	f(func(c *gateway.Config) { c.MQTTUsers = filepath.Join(dir, "missing.users") }, "--mqtt-users")
	f(func(c *gateway.Config) {
		c.CloudURL, c.CloudCAFile = "mqtts://cloud.example:8883", filepath.Join(dir, "missing.pem")
	}, "--cloud-ca-file")
	f(func(c *gateway.Config) { c.Dev = true; c.CodeKey = exampleKey }, "") // dev mode may use any key

	// A data dir that does not exist yet is not created by the check.
	cfg := gateway.Defaults()
	cfg.DataDir, cfg.MQTTAddr, cfg.HTTPAddr = filepath.Join(dir, "new", "data"), free(), free()
	if _, err := gateway.Check(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check created %s (stat: %v)", filepath.Join(dir, "new"), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("Check left files in %s: %v", dir, entries)
	}

	// A listen address in use is a warning: the gateway of this
	// configuration may be running.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.HTTPAddr = ln.Addr().String()
	warnings, err := gateway.Check(cfg)
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "--http-addr "+cfg.HTTPAddr+" cannot be listened on now") ||
		!strings.Contains(warnings[0], "set --http-addr") {
		t.Errorf("Check with the HTTP address taken: %q, %v; want one warning naming --http-addr", warnings, err)
	}
}

func TestParseMappings(t *testing.T) {
	got, err := gateway.ParseMappings("locky/up/#=lockers/{id}/up/#@1, locky/screen/display=lockers/{id}/screen@0")
	if err != nil {
		t.Fatal(err)
	}
	want := []bridge.Mapping{{From: "locky/up/#", To: "lockers/{id}/up/#", QoS: 1},
		{From: "locky/screen/display", To: "lockers/{id}/screen", QoS: 0}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v; want %+v", got, want)
	}
	for _, bad := range []string{"a=b", "a=b@2", "=b@1", "a=@1"} {
		if _, err := gateway.ParseMappings(bad); err == nil {
			t.Errorf("ParseMappings(%q) accepted", bad)
		}
	}
	if m, err := gateway.ParseMappings(""); err != nil || m != nil {
		t.Errorf("ParseMappings(\"\") = %v, %v; want none", m, err)
	}
}

// TestUnknownEnvIsNamed: a misspelled LOCKY_* variable would be ignored
// without a word; it is named, with the option meant.
func TestUnknownEnvIsNamed(t *testing.T) {
	f := func(env string, want ...string) {
		t.Helper()
		got := gateway.UnknownEnv([]string{env})
		if n := min(len(want), 1); len(got) != n {
			t.Fatalf("UnknownEnv(%q) = %q; want %d warning", env, got, n)
		}
		for _, w := range want {
			if !strings.Contains(got[0], w) {
				t.Errorf("UnknownEnv(%q) = %q; want it to say %q", env, got[0], w)
			}
		}
	}
	f("LOCKY_GRAC=1m", "LOCKY_GRAC names no option", "did you mean LOCKY_GRACE?")
	f("LOCKY_CLOUD_URLS=mqtt://x:1883", "did you mean LOCKY_CLOUD_URL?")
	f("LOCKY_VERSION=1", "LOCKY_VERSION names no option")
	f("LOCKY_GRACE=1m")
	f("LOCKY_CODE_KEY=00")
	f("LOCKY_CONFIG=/etc/locky.conf")
	f("PATH=/usr/bin")
}
