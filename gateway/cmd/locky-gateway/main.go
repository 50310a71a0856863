// Command locky-gateway runs one locker: the embedded MQTT broker, the store,
// the workflow, the door driver and the bridge to the cloud. With no options
// it runs a simulated dev locker on loopback (see --help).
//
// Its place in the layering: a program on top of the assembly (gateway); it
// parses the command line and the signals and hands the rest to gateway.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/gateway/broker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "passwd" {
		return passwd(args[1:], os.Stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "boards" {
		return boards(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "upgrade" {
		return upgradeCmd(args[1:], stdout, stderr)
	}
	start := time.Now()
	u := newUpgrader(args) // finds this binary before an upgrade replaces it
	cfg, opts, err := gateway.ParseArgs(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if opts.Version {
		version, commit := gateway.Build()
		fmt.Fprintln(stdout, "locky-gateway", version, commit)
		return 0
	}
	if opts.Probe != "" {
		return probe(opts.Probe, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "locky-gateway:", err)
		return 2
	}
	envWarnings := gateway.UnknownEnv(os.Environ())
	if opts.CheckConfig {
		return checkConfig(cfg, envWarnings, stdout, stderr)
	}
	log := newLogger(cfg, stderr)
	for _, w := range envWarnings {
		log.Warn(w)
	}
	return serve(cfg, log, start, u)
}

// checkConfig is --check-config: it prints the warnings and what to fix, and
// returns the exit code.
func checkConfig(cfg gateway.Config, envWarnings []string, stdout, stderr io.Writer) int {
	warnings, err := gateway.Check(cfg)
	warnings = append(envWarnings, warnings...)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "locky-gateway: warning:", w)
	}
	if err != nil {
		fmt.Fprintln(stderr, "locky-gateway:", err)
		return 2
	}
	fmt.Fprintln(stdout, "configuration ok")
	return 0
}

// serve runs the gateway until SIGINT or SIGTERM, or until u hands it over
// to a new binary, and returns the exit code; start is when the process
// began, for the log.
func serve(cfg gateway.Config, log *slog.Logger, start time.Time, u *upgrader) int {
	g, err := gateway.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills the process
	}()
	runCtx, handOver := context.WithCancel(ctx)
	defer handOver()
	u.start(runCtx, g, log, handOver)
	version, commit := gateway.Build()
	log.Info("starting", "version", version, "commit", commit, "since_exec", time.Since(start).Round(time.Microsecond))
	// Run stops everything it or New started before it returns, also when
	// it fails to start; Close only reports what failed to stop (logged).
	runErr := g.Run(runCtx)
	closeErr := g.Close()
	// An upgrade goes ahead even if a step failed to stop (a slow HTTP
	// client, say): the new binary takes over what this one let go of. A
	// SIGTERM that came meanwhile is the operator's stop, and wins.
	if u.handingOver() && ctx.Err() == nil {
		log.Info("stopped for the upgrade; starting the new binary", "uptime", time.Since(start).Round(time.Millisecond),
			"stop_errors", errors.Join(runErr, closeErr))
		return u.execNew()
	}
	if runErr != nil {
		log.Error("stopped with an error", "err", runErr)
		return 1
	}
	if closeErr != nil {
		return 1
	}
	log.Info("stopped cleanly", "uptime", time.Since(start).Round(time.Millisecond))
	return 0
}

const passwdUsage = `usage: locky-gateway passwd NAME ROLE [CLIENT-IDS] < password-file

Prints the --mqtt-users line of a client of the local broker, its password
(the first line of stdin) hashed with argon2id. ROLE is screen, door:N,
doors, backend, observer or admin. CLIENT-IDS, comma-separated, each exact or
a prefix ending in *, are the client ids the user may connect with; the
default is NAME, NAME-* and NAME/*. Example:

  openssl rand -base64 18 > kiosk.pw
  locky-gateway passwd kiosk screen < kiosk.pw >> /etc/locky/mqtt-users
`

// passwd prints a users-file line for a password read from stdin.
func passwd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, passwdUsage)
		return 0
	}
	if len(args) < 2 || len(args) > 3 {
		fmt.Fprint(stderr, passwdUsage)
		return 2
	}
	if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(stderr, "password for "+args[0]+" (echoed; pipe it from a file to keep it off the screen): ")
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		fmt.Fprintf(stderr, "locky-gateway passwd: cannot read the password from stdin: %v\n", err)
		return 1
	}
	var ids []string
	if len(args) == 3 {
		ids = strings.Split(args[2], ",")
	}
	u, err := broker.NewUser(args[0], args[1], strings.TrimRight(line, "\r\n"), ids)
	if err != nil {
		fmt.Fprintln(stderr, "locky-gateway passwd:", err)
		return 2
	}
	fmt.Fprintln(stdout, u.Line())
	return 0
}

// probe GETs url and reports whether it answered 200.
func probe(url string, stderr io.Writer) int {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(stderr, "probe:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "probe:", resp.Status)
		return 1
	}
	return 0
}

func newLogger(cfg gateway.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by ParseArgs
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
