package gateway_test

import (
	"io"
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
	f([]string{"--lockout-base", "2h"}, "", "--lockout-max 1h0m0s is shorter than --lockout-base")
	f([]string{"--metrics-push-url", "ftp://vm/x"}, "", "--metrics-push-url")
	f([]string{"extra"}, "", `unexpected argument "extra"`)
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
