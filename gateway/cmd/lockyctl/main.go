// Command lockyctl is the back-end's companion CLI for the locker fleet: it
// talks to the cloud MQTT broker, never to a locker directly; only audit
// --data-dir reads a stopped locker's data dir.
//
//	lockyctl send-reservation --locker ID --json '{"op":"upsert","reservation":{…}}' [flags]
//	lockyctl send-door        --locker ID --json '{"op":"upsert","door":{…}}'
//	lockyctl send-command     --locker ID --json '{"command":"open_door","door":7,"reason":"…"}'
//	lockyctl send             --locker ID --entity partners --json '{…}'
//	lockyctl watch  [--locker ID] [--count N] [--client-id ID] [--session-expiry D]
//	lockyctl online [--all]
//	lockyctl hash-code --code-key-file FILE [CODE…]
//	lockyctl audit --locker ID [--after SEQ] [--json]
//	lockyctl audit --data-dir DIR [--code-key-file FILE] [--json]
//	lockyctl help [COMMAND]
//
// The cloud broker is --url (or LOCKYCTL_URL); there is no default, so that
// lockyctl never talks to a locker's own local broker by mistake. Flags go
// before or after the command; --help prints a command's help on stdout and
// exits 0; a bad command line exits 2, a refusal or a failure 1.
//
// A send publishes on lockers/{id}/down/{entity} (with a generated msg_id if
// the JSON has none), waits for the matching ack on lockers/{id}/up/acks,
// prints it and exits 1 if it says ok=false or none came within --timeout,
// saying whether the locker is online, offline or unknown to the broker.
// watch prints the events of lockers/+/up/events as JSON lines as a
// back-end consumer must receive them: in a persistent session under a fixed
// client id, reconnecting with back-off, so that what the lockers sent while
// it was away comes when it is back. online lists the lockers whose retained
// lockers/{id}/status is online. hash-code prints the hash of each code (the
// arguments, or the lines of stdin) under a locker's code key, as the locker
// computes it. audit prints the audit trail and its verification, asked of a
// running locker (locky/down/audit, answered on lockers/{id}/up/audit) or
// read from the database of a stopped gateway (or a copy); it exits 1 naming
// the first record that is not what the locker wrote.
//
// Its place in the layering: a program on top; it shares the bridge's way of
// reaching a cloud broker (bridge.Endpoint), the contract's payloads, and,
// for a stopped locker, the store and the gateway's code key files.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // refused, timed out, or could not talk to the broker
	exitUsage = 2 // a bad command line
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the connection flags common to the commands that talk to the
// cloud broker. An empty field takes its LOCKYCTL_* variable.
type options struct {
	url, username, password   string
	caFile, certFile, keyFile string
	timeout                   time.Duration
}

// connectionFlags registers the connection flags. Their defaults do not come
// from the environment, so that --help never prints a password: fromEnv
// fills what no flag set.
func connectionFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.url, "url", "", "the cloud broker's `address`, mqtt://host:port or mqtts://host:port (env LOCKYCTL_URL; required: there is no default)")
	fs.StringVar(&o.username, "username", "", "user `name` (env LOCKYCTL_USERNAME)")
	fs.StringVar(&o.password, "password", "", "the `password` (env LOCKYCTL_PASSWORD)")
	fs.StringVar(&o.caFile, "ca-file", "", "PEM CA `file` for mqtts:// (default: the system's roots)")
	fs.StringVar(&o.certFile, "cert-file", "", "PEM client certificate `file` for mqtts://")
	fs.StringVar(&o.keyFile, "key-file", "", "PEM client key `file` for mqtts://")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the broker and for an answer")
}

func (o *options) fromEnv() {
	for _, v := range []struct {
		field *string
		env   string
	}{{&o.url, "LOCKYCTL_URL"}, {&o.username, "LOCKYCTL_USERNAME"}, {&o.password, "LOCKYCTL_PASSWORD"}} {
		if *v.field == "" {
			*v.field = os.Getenv(v.env)
		}
	}
}

// call is one command's run: its connection options, its arguments once the
// flags are parsed out, and where it reads and writes.
type call struct {
	o              options
	args           []string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// command is one lockyctl command. setup registers the command's flags and
// returns what runs it once they are parsed.
type command struct {
	name, synopsis, summary, help string
	broker                        bool // talks to the cloud broker: takes the connection flags
	positional                    bool // takes arguments besides its flags
	setup                         func(fs *flag.FlagSet) func(context.Context, *call) error
}

func commands() []command {
	sendHelp := "Publishes the message on lockers/{id}/down/{entity}, with a generated msg_id if it has none,\n" +
		"waits for the locker's ack on lockers/{id}/up/acks and prints it. Exits 1 if the locker refused\n" +
		"it or no ack came within --timeout, saying whether the locker is online, offline or unknown."
	return []command{
		{name: "send-reservation", synopsis: "--locker ID --json JSON", summary: "upsert or delete a reservation", help: sendHelp, broker: true, setup: sendCommand("reservations")},
		{name: "send-door", synopsis: "--locker ID --json JSON", summary: "upsert or delete a door", help: sendHelp, broker: true, setup: sendCommand("doors")},
		{name: "send-command", synopsis: "--locker ID --json JSON", summary: "a support command (open_door)", help: sendHelp, broker: true, setup: sendCommand("commands")},
		{name: "send", synopsis: "--locker ID --entity ENTITY --json JSON", summary: "any downstream message", help: sendHelp, broker: true, setup: sendCommand("")},
		{name: "watch", synopsis: "[--locker ID] [--count N] [--client-id ID] [--session-expiry D]", summary: "print events as JSON lines, missing none",
			help: watchHelp, broker: true, setup: watchCommand},
		{name: "online", synopsis: "[--all]", summary: "list the lockers that are online",
			help: "Lists the lockers whose retained lockers/{id}/status says online, with the version they run and\n" +
				"since when; --all adds those that are offline. Nothing on stdout when none is: stderr says so.\n" +
				"Exits 1 if --url turns out to be a locker's local broker.",
			broker: true, setup: onlineCommand},
		{name: "hash-code", synopsis: "--code-key-file FILE [CODE...]", summary: "print each code's hash under a locker's key (codes from stdin if none)",
			help: "Prints, one per line, each code's hex HMAC-SHA256 under the locker's code key, as the locker\n" +
				"computes it: what a back-end sends as deposit_hash, pickup_hash or courier_hash. The codes are\n" +
				"the arguments or, without any, the lines of stdin (which keeps them out of the process list).",
			positional: true, setup: hashCodeCommand},
		{name: "audit", synopsis: "--locker ID [--after SEQ] | --data-dir DIR [--code-key-file FILE]", summary: "print a locker's audit trail and its verification",
			help: "Prints a locker's audit trail of door openings and the verification of the hash chain that\n" +
				"seals it, and exits 1 naming the first altered or missing record. With --locker it asks the\n" +
				"running locker through the cloud broker, page by page; with --data-dir it reads the database of\n" +
				"a stopped gateway (or a copy of its data dir) and verifies it here with the locker's code key.",
			broker: true, setup: auditCommand},
	}
}

const intro = `lockyctl is the back-end's companion CLI for the locker fleet: it talks to the
cloud MQTT broker the lockers connect to, never to a locker's own broker.

usage: lockyctl COMMAND [flags]
`

// run runs one lockyctl command line and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmds := commands()
	c := &call{stdin: stdin, stdout: stdout, stderr: stderr}
	global := newFlagSet("lockyctl")
	connectionFlags(global, &c.o)
	if err := global.Parse(args); err != nil { // up to the command
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, cmds, global)
			return exitOK
		}
		fmt.Fprintf(stderr, "lockyctl: %s\nRun 'lockyctl --help' for usage.\n", err)
		return exitUsage
	}
	if global.NArg() == 0 {
		printUsage(stderr, cmds, global)
		return exitUsage
	}
	name, rest := global.Arg(0), global.Args()[1:]
	if name == "help" {
		return help(rest, cmds, global, stdout, stderr)
	}
	cmd, ok := find(cmds, name)
	if !ok {
		fmt.Fprintf(stderr, "lockyctl: unknown command %q\nRun 'lockyctl --help' for the commands.\n", name)
		return exitUsage
	}
	fs := newFlagSet(name)
	runCmd := cmd.setup(fs)
	if cmd.broker {
		addFlags(fs, global)
	}
	var err error
	if c.args, err = parseInterspersed(fs, rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(stdout, cmd, global)
			return exitOK
		}
		fmt.Fprintf(stderr, "lockyctl %s: %s\nRun 'lockyctl %s --help' for usage.\n", name, err, name)
		return exitUsage
	}
	if !cmd.positional && len(c.args) > 0 {
		fmt.Fprintf(stderr, "lockyctl %s: unexpected argument %q\nRun 'lockyctl %s --help' for usage.\n", name, c.args[0], name)
		return exitUsage
	}
	c.o.fromEnv()
	err = runCmd(ctx, c)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "lockyctl %s: %s\nRun 'lockyctl %s --help' for usage.\n", name, err, name)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "lockyctl %s: %s\n", name, err)
		return exitFail
	}
}

// help runs "lockyctl help [COMMAND]".
func help(args []string, cmds []command, global *flag.FlagSet, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		printUsage(stdout, cmds, global)
		return exitOK
	case 1:
		if cmd, ok := find(cmds, args[0]); ok {
			printCommandHelp(stdout, cmd, global)
			return exitOK
		}
		fmt.Fprintf(stderr, "lockyctl help: unknown command %q\nRun 'lockyctl --help' for the commands.\n", args[0])
	default:
		fmt.Fprintln(stderr, "lockyctl help: give at most one command")
	}
	return exitUsage
}

func find(cmds []command, name string) (command, bool) {
	for _, c := range cmds {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// newFlagSet returns a flag set that prints nothing: run says what is wrong
// on stderr, or prints the help on stdout.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// addFlags makes the flags of from settable in fs too, the same values.
func addFlags(fs, from *flag.FlagSet) {
	from.VisitAll(func(f *flag.Flag) {
		fs.Var(f.Value, f.Name, f.Usage)
		fs.Lookup(f.Name).DefValue = f.DefValue // not what the flags before the command set
	})
}

// parseInterspersed parses the flags of args wherever they are among the
// other arguments, which it returns; after "--" everything is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if len(left) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(left); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, left...), nil
		}
		positional = append(positional, left[0])
		args = left[1:]
	}
}

func printUsage(w io.Writer, cmds []command, global *flag.FlagSet) {
	fmt.Fprint(w, intro)
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-17s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-17s %s\n", "help [COMMAND]", "print the help of a command")
	fmt.Fprintln(w, "\nconnection flags (before or after the command):")
	printFlags(w, global)
	fmt.Fprintln(w, "\nRun 'lockyctl COMMAND --help' for a command's flags.")
}

func printCommandHelp(w io.Writer, cmd command, global *flag.FlagSet) {
	fmt.Fprintf(w, "usage: lockyctl %s %s", cmd.name, cmd.synopsis)
	if cmd.broker {
		fmt.Fprint(w, " [connection flags]")
	}
	fmt.Fprintf(w, "\n\n%s\n\nflags:\n", cmd.help)
	own := newFlagSet(cmd.name)
	cmd.setup(own)
	printFlags(w, own)
	if cmd.broker {
		fmt.Fprintln(w, "\nconnection flags (before or after the command):")
		printFlags(w, global)
	}
}

// printFlags prints the flags of fs with two dashes, the way they are
// written in this help.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if kind != "" {
			line += " " + kind
		}
		fmt.Fprintf(w, "%s\n        %s", line, strings.ReplaceAll(usage, "\n", "\n        "))
		if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" {
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	})
}

// validID reports whether s can be one topic level.
func validID(s string) bool { return s != "" && !strings.ContainsAny(s, "/+#") }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
