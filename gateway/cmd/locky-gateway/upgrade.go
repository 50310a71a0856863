package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/locky-edge/locky/gateway"
)

// An in-place upgrade without systemd: the operator puts the new binary
// where the running one was started from (an atomic rename) and sends the
// gateway SIGUSR2, or runs `locky-gateway upgrade`, which does and waits.
// The gateway checks the new binary (--version, then --check-config with its
// own arguments) while it goes on serving; a binary that fails them is
// refused and the gateway goes on. Otherwise it keeps duplicates of its
// listening sockets, stops gracefully (the database closed), and replaces
// itself with the new binary: the same PID, the sockets listening all along,
// so clients that connect meanwhile wait in the kernel's backlog.
//
// Unlike tableflip, old and new never run at once: the database has one
// owner at a time, and the gap is the new binary's start (tens of ms). The
// price: a new binary that passes the checks but fails later leaves no old
// process to fall back to; under systemd (Restart=always) or Mender that is
// their rollback's job, and an exec that itself fails starts this binary
// again.

// upgrader turns the first SIGUSR2 whose binary passes the checks into a
// graceful stop of the gateway with its sockets kept for the new binary.
type upgrader struct {
	exe    string   // the binary to start: the path this one was started from
	exeErr error    // why exe is unknown (upgrades are then off)
	args   []string // this one's arguments, given to it as they are
	sig    chan os.Signal
	failed error // why the previous binary's exec of a new one failed, if it did
	g      *gateway.Gateway
	log    *slog.Logger
	stop   context.CancelFunc // ends the gateway's Run

	mu    sync.Mutex
	files map[string]*os.File // the sockets, once an upgrade is under way
}

// newUpgrader finds this binary's path, to start it again by that path
// once an operator has put a new binary there.
//
// It takes SIGUSR2 at once: one sent while the gateway starts waits for it
// instead of killing the process (the signal's default).
func newUpgrader(args []string) *upgrader {
	exe, err := startedFrom(os.Args[0])
	u := &upgrader{exe: exe, exeErr: err, args: args, sig: make(chan os.Signal, 1)}
	signal.Notify(u.sig, syscall.SIGUSR2)
	if why, ok := os.LookupEnv(gateway.EnvUpgradeFailed); ok { // the fallback of execNew
		u.failed = errors.New(why)
		os.Unsetenv(gateway.EnvUpgradeFailed)
	}
	return u
}

// startedFrom is the absolute path this binary was started by: argv[0],
// not the file it resolves to (os.Executable follows symbolic links, and an
// install that switches a symlink to the new release must start that one).
func startedFrom(argv0 string) (string, error) {
	if !strings.Contains(argv0, "/") {
		return exec.LookPath(argv0)
	}
	return filepath.Abs(argv0)
}

// start serves SIGUSR2 for g from its own goroutine until ctx ends;
// stop ends g's Run for the hand-over.
func (u *upgrader) start(ctx context.Context, g *gateway.Gateway, log *slog.Logger, stop context.CancelFunc) {
	u.g, u.log, u.stop = g, log, stop
	if u.failed != nil {
		err := fmt.Errorf("upgrade refused, the gateway goes on with this binary: %w", u.failed)
		log.Error(err.Error())
		g.UpgradeRefused(err)
	}
	if u.exeErr != nil {
		log.Warn("cannot find this binary's path: in-place upgrades (SIGUSR2) are off", "err", u.exeErr)
		return
	}
	go u.watch(ctx)
}

// watch serves SIGUSR2 until ctx ends or an upgrade is under way.
func (u *upgrader) watch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.sig:
		}
		if u.try() {
			return
		}
	}
}

// try checks the new binary and, if it passes, starts the hand-over; it
// returns whether it did.
func (u *upgrader) try() bool {
	u.log.Info("upgrade asked (SIGUSR2): checking the new binary", "binary", u.exe)
	files, err := u.prepare()
	if err != nil {
		err = fmt.Errorf("upgrade refused, the gateway goes on with this binary: %w", err)
		u.log.Error(err.Error())
		u.g.UpgradeRefused(err)
		return false
	}
	u.mu.Lock()
	u.files = files
	u.mu.Unlock()
	u.log.Info("upgrading: stopping gracefully, then starting the new binary on the same sockets", "binary", u.exe)
	u.stop()
	return true
}

func (u *upgrader) prepare() (map[string]*os.File, error) {
	if err := preflight(u.exe, u.args); err != nil {
		return nil, err
	}
	return u.g.HandOver()
}

// preflight runs the new binary's --version and --check-config with the
// gateway's arguments; either failing refuses the upgrade.
func preflight(exe string, args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, check := range [][]string{{"--version"}, append([]string{"--check-config"}, args...)} {
		cmd := exec.CommandContext(ctx, exe, check...)
		cmd.WaitDelay = 2 * time.Second // a child of the check that keeps its output open does not hold us
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s did not finish within 30 s", exe, check[0])
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", exe, check[0], err, lastLine(out))
		}
	}
	return nil
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// execNew replaces this process with the new binary, handing it the
// sockets; it returns only if that fails, after trying to start this binary
// again the same way.
func (u *upgrader) execNew() int {
	u.mu.Lock()
	files := u.files
	u.mu.Unlock()
	env, err := gateway.UpgradeEnv(os.Environ(), files)
	if err != nil {
		u.log.Error("cannot hand the sockets over; restart the gateway", "err", err)
		return 1
	}
	argv := append([]string{u.exe}, u.args...)
	// Until the new binary's runtime takes SIGUSR2, its default would kill
	// the process: a second upgrade asked during the exec is ignored
	// instead (an ignored signal stays ignored across execve).
	signal.Ignore(syscall.SIGUSR2)
	err = syscall.Exec(u.exe, argv, env)
	u.log.Error("cannot start the new binary; starting this one again", "binary", u.exe, "err", err)
	env = append(env, gateway.EnvUpgradeFailed+"="+fmt.Sprintf("cannot start %s: %v", u.exe, err))
	err = syscall.Exec("/proc/self/exe", argv, env)
	u.log.Error("cannot start this binary again; restart the gateway", "err", err)
	return 1
}

// handingOver reports whether an upgrade stopped the gateway.
func (u *upgrader) handingOver() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.files != nil
}

const upgradeUsage = `usage: locky-gateway upgrade [--http-addr ADDR] [--timeout D]

Upgrades the running gateway in place, without systemd: put the new binary
where the running one was started from first (install it beside it, then mv
over it). The command asks the gateway at ADDR (GET /status) for its PID,
sends it SIGUSR2 and waits until the new binary serves under the same PID,
or says why the gateway refused it (the new binary's --version or
--check-config failed; the old one goes on). Run it as the gateway's user or
root. Exit 0 when upgraded, 1 if refused or not done within --timeout.
`

// upgradeCmd is `locky-gateway upgrade`.
func upgradeCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("locky-gateway upgrade", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, upgradeUsage); fs.PrintDefaults() }
	addr := fs.String("http-addr", gateway.Defaults().HTTPAddr, "the running gateway's --http-addr")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the new binary to be ready")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	c := &http.Client{Timeout: 10 * time.Second}
	url := "http://" + *addr + "/status"
	before, err := readStatus(c, url)
	if err != nil {
		fmt.Fprintf(stderr, "locky-gateway upgrade: %v; is the gateway running with --http-addr %s?\n", err, *addr)
		return 1
	}
	// The PID comes from whoever answers on addr: signal it only if that
	// process holds the socket we talked to (SIGUSR2 kills most others).
	if err := ownsListener(before.PID, *addr); err != nil {
		fmt.Fprintf(stderr, "locky-gateway upgrade: %v; not signalled\n", err)
		return 1
	}
	asked := time.Now()
	if err := syscall.Kill(before.PID, syscall.SIGUSR2); err != nil {
		fmt.Fprintf(stderr, "locky-gateway upgrade: cannot signal the gateway (pid %d): %v; run as its user or root\n", before.PID, err)
		return 1
	}
	return awaitUpgrade(c, url, before, asked, *timeout, stdout, stderr)
}

// awaitUpgrade polls the gateway's status until a new start under the same
// PID is ready, or a refusal after asked.
func awaitUpgrade(c *http.Client, url string, before gateway.Status, asked time.Time, timeout time.Duration, stdout, stderr io.Writer) int {
	deadline := asked.Add(timeout)
	for time.Now().Before(deadline) {
		st, err := readStatus(c, url)
		switch {
		case err != nil: // between two binaries: try again
		case st.UpgradeRefusedAt != nil && (before.UpgradeRefusedAt == nil || st.UpgradeRefusedAt.After(*before.UpgradeRefusedAt)):
			// a refusal newer than the one before the signal, if any
			fmt.Fprintf(stderr, "locky-gateway upgrade: %s\n", st.UpgradeRefused)
			return 1
		case st.PID != before.PID:
			fmt.Fprintf(stderr, "locky-gateway upgrade: another process (pid %d, was %d) serves now: the gateway was restarted, not upgraded in place\n", st.PID, before.PID)
			return 1
		case st.StartedAt.After(before.StartedAt) && st.Ready:
			fmt.Fprintf(stdout, "upgraded: pid %d, %s (%s) → %s (%s), ready %v after the signal\n",
				st.PID, before.Version, before.Commit, st.Version, st.Commit, time.Since(asked).Round(time.Millisecond))
			if st.Version == before.Version && st.Commit == before.Commit {
				fmt.Fprintln(stderr, "locky-gateway upgrade: warning: the same build serves again; was the new binary put where the gateway was started from?")
			}
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(stderr, "locky-gateway upgrade: no new start ready within %v; see the gateway's log\n", timeout)
	return 1
}

func readStatus(c *http.Client, url string) (gateway.Status, error) {
	var st gateway.Status
	resp, err := c.Get(url)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("GET %s: %w", url, err)
	}
	return st, nil
}

// ownsListener checks that process pid holds the listening TCP socket at
// addr: its inode, from /proc/net/tcp and tcp6, among the process's file
// descriptors.
func ownsListener(pid int, addr string) error {
	inodes, err := listeningInodes(addr)
	if err != nil {
		return err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return fmt.Errorf("cannot read the descriptors of pid %d (run as the gateway's user or root): %w", pid, err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && inodes[link] {
			return nil
		}
	}
	return fmt.Errorf("pid %d, named by %s/status, does not hold the socket listening at %s", pid, addr, addr)
}

// listeningInodes is the set of "socket:[inode]" of the sockets listening at
// addr (host:port, as --http-addr).
func listeningInodes(addr string) (map[string]bool, error) {
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr %s: %w", addr, err)
	}
	port := fmt.Sprintf(":%04X", tcp.Port)
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// local address, state 0A (LISTEN), inode
			if len(f) > 9 && strings.HasSuffix(f[1], port) && f[3] == "0A" {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return nil, fmt.Errorf("no socket listens at %s", addr)
	}
	return inodes, nil
}
