package docker

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
)

// proc is a program a test runs in the background, its output in a file that
// the test's log shows if the test failed.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error // once exited is closed
}

// startProc starts cmd; t.Cleanup stops it with SIGTERM (then SIGKILL).
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, log: filepath.Join(t.TempDir(), name+".log"), exited: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("cannot start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, p.output())
		}
	})
	return p
}

// alive returns an error once the program has exited.
func (p *proc) alive() error {
	select {
	case <-p.exited:
		return errors.New(p.name + " exited: " + p.exitStatus() + "\n" + p.output())
	default:
		return nil
	}
}

func (p *proc) exitStatus() string {
	if p.err == nil {
		return "exit status 0"
	}
	return p.err.Error()
}

// stop sends SIGTERM and waits for the exit (SIGKILL after
// gatewaytest.WaitLimit, a hang guard); it returns the program's exit error.
func (p *proc) stop() error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.err
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("cannot stop %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(gatewaytest.WaitLimit):
		p.t.Errorf("%s did not exit within %s of SIGTERM; killing it", p.name, gatewaytest.WaitLimit)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	return p.err
}

// output is what the program wrote so far.
func (p *proc) output() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// openToOthers lets other users (a service's user, mosquitto) reach the
// files under dir, a t.TempDir(): it and its parent are made 0755.
func openToOthers(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// readmeSection returns the text of the README section titled title.
func readmeSection(t *testing.T, title string) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, s, ok := strings.Cut(string(raw), "\n## "+title+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", title)
	}
	s, _, _ = strings.Cut(s, "\n## ")
	return s
}

var shBlock = regexp.MustCompile("(?ms)^([ \t]*)```sh\n(.*?)^[ \t]*```")

// shBlocks returns the ```sh blocks of markdown text, as their lines (a
// block's indentation inside a list item removed).
func shBlocks(md string) [][]string {
	var blocks [][]string
	for _, m := range shBlock.FindAllStringSubmatch(md, -1) {
		var lines []string
		for _, l := range strings.Split(strings.TrimSuffix(m[2], "\n"), "\n") {
			lines = append(lines, strings.TrimPrefix(l, m[1]))
		}
		blocks = append(blocks, lines)
	}
	return blocks
}

// buildBinaries builds the gateway's programs into a new directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/", "../gateway/cmd/locky-gateway", "../gateway/cmd/lockyctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// environ is the test's environment without the variables named, or
// beginning with a name ending in *.
func environ(drop ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		for _, d := range drop {
			if k == d || strings.HasSuffix(d, "*") && strings.HasPrefix(k, strings.TrimSuffix(d, "*")) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}
