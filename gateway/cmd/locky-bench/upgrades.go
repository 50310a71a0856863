package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// upgradesConfig is the size of a `locky-bench upgrades` run.
type upgradesConfig struct {
	swaps     int           // upgrades in place, then as many stop/starts
	codeEvery time.Duration // the screen enters a code this often
	doors     int           // doors, each with a reservation, so that codes never wait for one
	doorOpen  time.Duration // how long the board holds a door open before it reports it closed
	after     int           // answers awaited after each swap before the next
	resync    bool          // the board reports every door's state again after a reconnection
}

func parseUpgradesFlags(args []string, stderr io.Writer) (upgradesConfig, error) {
	var c upgradesConfig
	fs := flag.NewFlagSet("locky-bench upgrades", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.swaps, "upgrades", 20, "upgrades in place (vA → vB → vA …), then as many plain stop/starts")
	fs.DurationVar(&c.codeEvery, "code-every", 20*time.Millisecond, "the screen enters a valid code this often")
	fs.IntVar(&c.doors, "doors", 200, "doors, each with a reservation ahead, so that no code waits for a free door")
	fs.DurationVar(&c.doorOpen, "door-open", 200*time.Millisecond, "the board reports a door closed this long after it opened it")
	fs.IntVar(&c.after, "answers-after", 5, "answers the screen must get after a swap before the next one")
	fs.BoolVar(&c.resync, "board-resync", true, "the door board reports every door's state again after a reconnection; false: a report that got no PUBACK is lost")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q; the options of upgrades are flags (see upgrades -help)", fs.Arg(0))
	case c.swaps < 1 || c.after < 1:
		return c, errors.New("-upgrades and -answers-after must be at least 1")
	case c.doors < 1 || c.doors > 9999:
		return c, fmt.Errorf("-doors %d: must be 1..9999", c.doors)
	case c.codeEvery <= 0 || c.doorOpen <= 0:
		return c, errors.New("-code-every and -door-open must be more than 0")
	}
	return c, nil
}

// installation is the gateway as an operator installs it: two builds, the
// path the gateway runs from (the one the next build is moved over) and a
// copy that runs `upgrade` and is never moved.
type installation struct {
	builds    [2]string // vA, vB
	installed string
	ctl       string
}

// The two versions the gateway is built as; vA runs first.
const versionA, versionB = "vA", "vB"

// version returns the version of build i: vA, then vB.
func version(i int) string {
	if i == 0 {
		return versionA
	}
	return versionB
}

// install builds the gateway twice, as vA and vB, under work.
func install(ctx context.Context, work string, logf func(string, ...any)) (installation, error) {
	in := installation{installed: filepath.Join(work, "bin", "locky-gateway"), ctl: filepath.Join(work, "locky-gateway-ctl")}
	for i, v := range []string{versionA, versionB} {
		logf("building the gateway as %s", v)
		in.builds[i] = filepath.Join(work, "locky-gateway-"+v)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", in.builds[i],
			"-ldflags", "-X github.com/locky-edge/locky/gateway.Version="+v, "github.com/locky-edge/locky/gateway/cmd/locky-gateway")
		if out, err := cmd.CombinedOutput(); err != nil {
			return in, fmt.Errorf("cannot build the gateway %s (run the bench inside the module): %w\n%s", v, err, out)
		}
	}
	if err := os.MkdirAll(filepath.Dir(in.installed), 0o755); err != nil {
		return in, fmt.Errorf("cannot create the install dir: %w", err)
	}
	if err := os.Link(in.builds[0], in.ctl); err != nil {
		return in, fmt.Errorf("cannot link the upgrade command's binary: %w", err)
	}
	return in, in.put(0)
}

// put moves a fresh link of build i over the installed path, as `install`
// then `mv` does.
func (in installation) put(i int) error {
	tmp := in.installed + ".new"
	if err := os.Link(in.builds[i], tmp); err != nil {
		return fmt.Errorf("cannot link %s beside the installed binary: %w", version(i), err)
	}
	if err := os.Rename(tmp, in.installed); err != nil {
		return fmt.Errorf("cannot move %s over the installed binary: %w", version(i), err)
	}
	return nil
}

// fixedGateway is the gateway on fixed loopback ports and one data dir, so
// that a restart finds it where it was.
type fixedGateway struct {
	bin, dataDir, codeKey string
	mqtt, http            string
}

func newFixedGateway(bin, dataDir string) (fixedGateway, error) {
	g := fixedGateway{bin: bin, dataDir: dataDir}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return g, fmt.Errorf("cannot make a code key: %w", err)
	}
	g.codeKey = hex.EncodeToString(key)
	for _, addr := range []*string{&g.mqtt, &g.http} {
		port, err := freePort()
		if err != nil {
			return g, err
		}
		*addr = "127.0.0.1:" + strconv.Itoa(port)
	}
	return g, nil
}

// start runs the installed binary and waits for its "locker ready" line.
func (g fixedGateway) start(ctx context.Context, sup *supervisor) (*child, error) {
	cmd := exec.Command(g.bin, "--data-dir", g.dataDir, "--mqtt-addr", g.mqtt, "--http-addr", g.http,
		"--log-format", "json", "--sim-doors", "0", "--code-key", g.codeKey, "--grace", "24h")
	ready := make(chan struct{}, 1)
	c, _, err := sup.start("locky-gateway", cmd, func(line []byte, _ time.Time) {
		var l struct{ Msg string }
		if bytes.Contains(line, []byte(`"locker ready"`)) && json.Unmarshal(line, &l) == nil && l.Msg == "locker ready" {
			select {
			case ready <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	select {
	case <-ready:
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("the gateway exited before it was ready: %w", c.exitErr())
	case <-time.After(waitLimit):
		return nil, fmt.Errorf("the gateway was not ready within %s; last log lines:\n%s", waitLimit, c.tail.String())
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// upgrade runs `ctl upgrade` and checks that it says the gateway now runs
// version want.
func upgrade(ctx context.Context, ctl, httpAddr, want string) error {
	out, err := exec.CommandContext(ctx, ctl, "upgrade", "--http-addr", httpAddr, "--timeout", "60s").CombinedOutput()
	if err != nil {
		return fmt.Errorf("locky-gateway upgrade: %w: %s", err, bytes.TrimSpace(out))
	}
	if !strings.Contains(string(out), "→ "+want+" (") {
		return fmt.Errorf("locky-gateway upgrade said %q; want an upgrade to %s", bytes.TrimSpace(out), want)
	}
	return nil
}

// stopGateway stops the gateway as systemd would, SIGTERM, and waits for
// its exit (status 0).
func stopGateway(c *child) error {
	if _, err := c.stop(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping the gateway: %w", err)
	}
	return nil
}
