package gateway

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/gateway/linefile"
	"github.com/locky-edge/locky/gateway/metricspush"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/controller"
	"github.com/locky-edge/locky/handlers/store"
)

// Config is every option of the gateway. Each field is a flag (--name), an
// environment variable (LOCKY_NAME, dashes as underscores) and a key of the
// config file (name = value); flags win over the environment, which wins over
// the file. Zero values mean what each comment says.
type Config struct {
	LockerID string // locker id, used in cloud topics and metrics
	DataDir  string // directory of the database and the dev code key
	MQTTAddr string // local broker listen address
	HTTPAddr string // HTTP listen address (metrics, health, pages)
	// MQTTUsers is a file of `name role argon2id-hash [client-ids]` lines,
	// each written by `locky-gateway passwd`: the clients (touchscreen, door
	// boards, monitoring) allowed on the local broker and their topics.
	// Empty means none but dev mode's anonymous ones.
	MQTTUsers string
	// Limits of the local broker's clients (broker.Config has the details):
	// clients connected at once (and as many connections still before
	// their CONNECT), open connections per IP address, the time to deliver
	// the CONNECT, retained topics, and clients connected at once with one
	// user. Each must be positive.
	MQTTMaxClients     int
	MQTTMaxPerAddr     int
	MQTTConnectTimeout time.Duration
	MQTTMaxRetained    int
	MQTTMaxPerUser     int
	// Dev mode: the local broker accepts anonymous clients and the code key
	// is generated into the data dir when neither --code-key nor
	// --code-key-file is set.
	Dev bool

	SimDoors int // simulated doors; 0 means an external client plays the doors
	// DoorMap is the file that maps each door to its lock board (DoorMap's
	// format); empty means no board is driven. It needs SimDoors 0.
	DoorMap      string
	SimDoorSize  string        // size of the doors created for the simulator
	SimAutoClose time.Duration // simulated doors close after this; 0 means only when told

	// CodeKey is the hex HMAC key for codes (at least 16 bytes). On the
	// command line every local user can read it: prefer CodeKeyFile or the
	// environment. Empty means CodeKeyFile, or in dev mode the dev key file.
	CodeKey string
	// CodeKeyFile is a file holding CodeKey's hex digits, readable by its
	// owner only (mode 0600 or 0400). Empty means none. CodeKey and
	// CodeKeyFile are one option: the one from the higher source wins.
	CodeKeyFile string
	// CodeKeyPrevious (or the file CodeKeyPreviousFile) is the key before a
	// rotation: codes hashed under it still open their doors while the
	// back-end re-sends its hashes under the new key. Empty means none.
	CodeKeyPrevious, CodeKeyPreviousFile string
	// CodeKeyPreviousUntil ends the overlap by the wall clock. The zero time
	// means the previous key is accepted until it is removed from the config.
	CodeKeyPreviousUntil time.Time
	// Set by ParseArgs, for New's warnings: the code key options given on
	// the command line, and the config file holding a code key that group or
	// other may read. Empty means none.
	keysOnCommandLine, keysInOpenFile string

	Grace            time.Duration // a used code stays valid this long
	DoorTimeout      time.Duration // a door must report open within this
	LeftOpenAfter    time.Duration // open longer than this raises door.left_open
	LockoutThreshold int           // invalid codes within the window that lock the screen
	LockoutWindow    time.Duration
	LockoutBase      time.Duration // first lockout; doubles up to LockoutMax
	LockoutMax       time.Duration
	// LockoutResetAfter is the time without a wrong code, after the last
	// lockout ended, that starts the doubling again from LockoutBase.
	LockoutResetAfter time.Duration
	// StopWait is the longest a graceful stop waits for the doors commanded
	// to report open; zero means the controller's (3 s). It has no flag:
	// SPEC §3 bounds the whole stop at 5 s. Tests lengthen it, so that a
	// slow machine does not race it.
	StopWait time.Duration

	Retention      time.Duration // delivered/returned/cancelled reservations are kept this long
	OutboxMaxBytes int64         // outbox byte bound; the oldest are dropped past it
	OutboxMaxAge   time.Duration // outbox messages older than this are dropped

	CloudURL           string        // mqtt:// or mqtts:// cloud broker; empty means no bridge
	CloudUsername      string        // cloud broker user name
	CloudPassword      string        // cloud broker password
	CloudCAFile        string        // CA certificate (PEM) for mqtts://
	CloudCertFile      string        // client certificate (PEM)
	CloudKeyFile       string        // client key (PEM)
	CloudSessionExpiry time.Duration // the cloud keeps the locker's session this long offline
	// CloudUp and CloudDown map topics between the local and the cloud broker:
	// comma-separated FROM=TO@QOS, {id} standing for the locker id. Empty
	// means locky/up/#=lockers/{id}/up/#@1 and lockers/{id}/down/#=locky/down/#@1.
	CloudUp, CloudDown string
	// CloudRetryMax caps the bridge's reconnect back-off (doubling from 1 s,
	// with jitter): the longest a locker may take to notice the cloud is back.
	CloudRetryMax time.Duration

	MetricsPushURL      string        // VictoriaMetrics import URL to push metrics to; empty means no push
	MetricsPushInterval time.Duration // how often to push

	LogFormat string // text or json
	LogLevel  string // debug, info, warn or error
}

// Defaults returns the configuration of `locky-gateway` with no options: a
// simulated dev locker on loopback.
func Defaults() Config {
	// The workflow's values are the controller's own defaults (SPEC §5), the
	// bounds the store's and the bridge's: each is written once, there.
	var wf controller.Config
	wf.Defaults()
	return Config{
		LockerID: "dev-locker", DataDir: "./data", MQTTAddr: "127.0.0.1:1883", HTTPAddr: "127.0.0.1:8080",
		Dev: true, SimDoors: 12, SimDoorSize: "M",
		Grace: wf.Grace, DoorTimeout: wf.DoorTimeout, LeftOpenAfter: wf.LeftOpenAfter,
		LockoutThreshold: wf.LockoutThreshold, LockoutWindow: wf.LockoutWindow, LockoutBase: wf.LockoutBase,
		LockoutMax: wf.LockoutMax, LockoutResetAfter: wf.LockoutResetAfter,
		Retention: store.DefaultRetention, OutboxMaxBytes: store.DefaultOutboxMaxBytes, OutboxMaxAge: store.DefaultOutboxMaxAge,
		CloudSessionExpiry: bridge.DefaultSessionExpiry, CloudRetryMax: bridge.DefaultRetryMax,
		MetricsPushInterval: metricspush.DefaultInterval,
		LogFormat:           "text", LogLevel: "info",
		MQTTMaxClients: broker.DefaultMaxClients, MQTTMaxPerAddr: broker.DefaultMaxPerAddr,
		MQTTConnectTimeout: broker.DefaultConnectTimeout, MQTTMaxRetained: broker.DefaultMaxRetained,
		MQTTMaxPerUser: broker.DefaultMaxPerUser,
	}
}

// flags binds every option to a flag set.
func (c *Config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.LockerID, "locker-id", c.LockerID, "locker id, used in cloud topics and metrics")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the database (and of the dev code key)")
	fs.StringVar(&c.MQTTAddr, "mqtt-addr", c.MQTTAddr, "local MQTT broker listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen address: /metrics, /healthz, /readyz, pages")
	fs.IntVar(&c.MQTTMaxClients, "mqtt-max-clients", c.MQTTMaxClients, "local broker: clients connected at once (the next gets CONNACK server busy), and connections still before their CONNECT (the next is closed)")
	fs.IntVar(&c.MQTTMaxPerAddr, "mqtt-max-per-addr", c.MQTTMaxPerAddr, "local broker: open connections from one IP address (loopback clients share one); the next is closed")
	fs.DurationVar(&c.MQTTConnectTimeout, "mqtt-connect-timeout", c.MQTTConnectTimeout, "local broker: time a new connection has to deliver its whole CONNECT before it is closed")
	fs.IntVar(&c.MQTTMaxRetained, "mqtt-max-retained", c.MQTTMaxRetained, "local broker: retained topics; a client's retained message on a new topic past it is refused (the gateway's own never are)")
	fs.IntVar(&c.MQTTMaxPerUser, "mqtt-max-per-user", c.MQTTMaxPerUser, "local broker: clients connected at once with one user; the next gets CONNACK quota exceeded")
	fs.StringVar(&c.MQTTUsers, "mqtt-users", c.MQTTUsers, "file of `name role argon2id-hash [client-ids]` lines for the local broker, written by `locky-gateway passwd NAME ROLE` (roles: screen, door:N, doors, backend, observer, admin; observer reads door states and commands, locky/up/# and the display, never codes)")
	fs.BoolVar(&c.Dev, "dev", c.Dev, "dev mode: anonymous local broker, code key generated into the data dir")
	fs.IntVar(&c.SimDoors, "sim-doors", c.SimDoors, "simulated doors; 0 = none, an external client plays the doors")
	fs.StringVar(&c.DoorMap, "door-map", c.DoorMap, "file mapping each door to its lock board (Kerong RS485 or Modbus RTU): lines `bus DEVICE baud=…`, `door N kerong DEVICE board=B lock=L`, `door N modbus DEVICE unit=U coil=C input=I`; needs --sim-doors 0")
	fs.StringVar(&c.SimDoorSize, "sim-door-size", c.SimDoorSize, "size of the doors created for the simulator")
	fs.DurationVar(&c.SimAutoClose, "sim-auto-close", c.SimAutoClose, "simulated doors close after this; 0 = only when told")
	fs.StringVar(&c.CodeKey, "code-key", c.CodeKey, "hex HMAC-SHA256 key for codes (>= 16 bytes); on the command line every local user can read it: prefer --code-key-file or LOCKY_CODE_KEY; empty = --code-key-file or, in dev mode, a key generated into the data dir")
	fs.StringVar(&c.CodeKeyFile, "code-key-file", c.CodeKeyFile, "file of the code key's hex digits, mode 0600 (or a systemd credential)")
	fs.StringVar(&c.CodeKeyPrevious, "code-key-previous", c.CodeKeyPrevious, "during a key rotation, the previous code key (hex): codes hashed under it still open; empty = no rotation")
	fs.StringVar(&c.CodeKeyPreviousFile, "code-key-previous-file", c.CodeKeyPreviousFile, "file of the previous code key's hex digits, mode 0600")
	fs.Var(optionalTime{&c.CodeKeyPreviousUntil}, "code-key-previous-until", "RFC 3339 time when the previous code key stops being accepted, e.g. 2026-12-31T23:00:00Z; empty = until it is removed")
	fs.DurationVar(&c.Grace, "grace", c.Grace, "a used code stays valid this long")
	fs.DurationVar(&c.DoorTimeout, "door-timeout", c.DoorTimeout, "a commanded door must report open within this")
	fs.DurationVar(&c.LeftOpenAfter, "left-open-after", c.LeftOpenAfter, "a door open longer raises door.left_open")
	fs.IntVar(&c.LockoutThreshold, "lockout-threshold", c.LockoutThreshold, "invalid codes within --lockout-window that lock the screen")
	fs.DurationVar(&c.LockoutWindow, "lockout-window", c.LockoutWindow, "window in which invalid codes are counted")
	fs.DurationVar(&c.LockoutBase, "lockout-base", c.LockoutBase, "first lockout; doubles each time")
	fs.DurationVar(&c.LockoutMax, "lockout-max", c.LockoutMax, "longest lockout")
	fs.DurationVar(&c.LockoutResetAfter, "lockout-reset-after", c.LockoutResetAfter, "time without a wrong code, after the last lockout, that starts the doubling again")
	fs.DurationVar(&c.Retention, "retention", c.Retention, "keep delivered, returned and cancelled reservations this long")
	fs.Int64Var(&c.OutboxMaxBytes, "outbox-max-bytes", c.OutboxMaxBytes, "outbox byte bound; the oldest messages are dropped past it")
	fs.DurationVar(&c.OutboxMaxAge, "outbox-max-age", c.OutboxMaxAge, "outbox messages that waited longer than this are dropped (time the locker ran, not the wall clock)")
	fs.StringVar(&c.CloudURL, "cloud-url", c.CloudURL, "cloud broker, mqtt://host:port or mqtts://host:port; empty = no bridge")
	fs.StringVar(&c.CloudUsername, "cloud-username", c.CloudUsername, "cloud broker user name")
	fs.StringVar(&c.CloudPassword, "cloud-password", c.CloudPassword, "cloud broker password")
	fs.StringVar(&c.CloudCAFile, "cloud-ca-file", c.CloudCAFile, "CA certificate (PEM) for mqtts://")
	fs.StringVar(&c.CloudCertFile, "cloud-cert-file", c.CloudCertFile, "client certificate (PEM) for mqtts://")
	fs.StringVar(&c.CloudKeyFile, "cloud-key-file", c.CloudKeyFile, "client key (PEM) for mqtts://")
	fs.DurationVar(&c.CloudSessionExpiry, "cloud-session-expiry", c.CloudSessionExpiry, "the cloud broker keeps the locker's session this long while it is offline")
	fs.DurationVar(&c.CloudRetryMax, "cloud-retry-max", c.CloudRetryMax, "longest wait between reconnects to the cloud (the back-off doubles from 1 s up to this, with jitter)")
	fs.StringVar(&c.CloudUp, "cloud-up", c.CloudUp, "upstream topic mappings FROM=TO@QOS,… ({id} = locker id); empty = locky/up/#=lockers/{id}/up/#@1")
	fs.StringVar(&c.CloudDown, "cloud-down", c.CloudDown, "downstream topic mappings FROM=TO@QOS,…; empty = lockers/{id}/down/#=locky/down/#@1")
	fs.StringVar(&c.MetricsPushURL, "metrics-push-url", c.MetricsPushURL, "VictoriaMetrics /api/v1/import/prometheus URL to push to; empty = no push")
	fs.DurationVar(&c.MetricsPushInterval, "metrics-push-interval", c.MetricsPushInterval, "how often to push metrics")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
}

// OptionNames returns the names of every configuration option, as flags.
func OptionNames() []string {
	var c Config
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c.flags(fs)
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f.Name) })
	return out
}

// Options of the command line that are not part of Config.
type Options struct {
	ConfigFile  string
	CheckConfig bool
	Version     bool
	// Probe is a URL to GET instead of running: exit 0 when it answers 200
	// (the container health check, in an image without curl).
	Probe string
}

// commandOnly are the options of the command line alone: not in a config
// file, not in the environment.
var commandOnly = map[string]bool{"config": true, "check-config": true, "version": true, "probe": true}

// newFlagSet binds every option of the command line to cfg and opts.
func newFlagSet(cfg *Config, opts *Options) *flag.FlagSet {
	fs := flag.NewFlagSet("locky-gateway", flag.ContinueOnError)
	cfg.flags(fs)
	fs.StringVar(&opts.ConfigFile, "config", "", "config file of `name = value` lines (names as the flags)")
	fs.BoolVar(&opts.CheckConfig, "check-config", false, "validate the configuration and its files, print what to fix, and exit")
	fs.BoolVar(&opts.Version, "version", false, "print the version and exit")
	fs.StringVar(&opts.Probe, "probe", "", "GET this URL, exit 0 if it answers 200 (a health check for images without curl)")
	return fs
}

// ParseArgs builds the configuration from the defaults, the config file
// (--config), the LOCKY_* environment and the command line, in that order of
// precedence from lowest to highest. A mistake is returned as an error that
// names the option, where it was set and what it wants; stderr gets only the
// usage of --help.
func ParseArgs(args []string, getenv func(string) string, stderr io.Writer) (Config, Options, error) {
	cfg := Defaults()
	var opts Options
	fs := newFlagSet(&cfg, &opts)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // a mistake is one line, not the whole usage; --help prints it below
	var setErr error     // the first value a flag refused, explained
	fs.VisitAll(func(f *flag.Flag) { f.Value = explainedValue{Value: f.Value, name: f.Name, first: &setErr} })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr)
			return cfg, opts, err
		}
		return cfg, opts, commandLineError(fs, args, err, setErr)
	}
	if fs.NArg() > 0 {
		return cfg, opts, fmt.Errorf("unexpected argument %q; options are flags (see --help)", fs.Arg(0))
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	if opts.ConfigFile == "" {
		opts.ConfigFile = getenv("LOCKY_CONFIG")
	}
	fromFile, err := applyConfigFile(fs, opts.ConfigFile, onCommandLine)
	if err != nil {
		return cfg, opts, err
	}
	fromEnv, err := applyEnv(fs, getenv, onCommandLine)
	if err != nil {
		return cfg, opts, err
	}
	if err := cfg.keySources(fs, opts.ConfigFile, getenv, onCommandLine, fromEnv, fromFile); err != nil {
		return cfg, opts, err
	}
	return cfg, opts, cfg.Validate()
}

// applyConfigFile sets the options of the config file at path (none when
// path is empty) that the command line does not set, and returns the names
// it set.
func applyConfigFile(fs *flag.FlagSet, path string, onCommandLine map[string]bool) (map[string]bool, error) {
	fromFile := map[string]bool{}
	if path == "" {
		return fromFile, nil
	}
	kv, err := readConfigFile(path)
	if err != nil {
		return fromFile, err
	}
	for _, e := range kv {
		f := fs.Lookup(e.key)
		if f == nil || commandOnly[e.key] {
			return fromFile, fmt.Errorf("%s:%d: unknown option %q%s (options are the flag names, see --help)",
				path, e.line, e.key, didYouMean(fs, e.key, ""))
		}
		if onCommandLine[e.key] {
			continue
		}
		if err := f.Value.Set(e.value); err != nil {
			return fromFile, fmt.Errorf("%s:%d: %s = %s: %w", path, e.line, e.key, e.value, err)
		}
		fromFile[e.key] = true
	}
	return fromFile, nil
}

// applyEnv sets the options of the LOCKY_* environment that the command line
// does not set, over those of the config file, and returns the names it set.
func applyEnv(fs *flag.FlagSet, getenv func(string) string, onCommandLine map[string]bool) (map[string]bool, error) {
	var envErr error
	fromEnv := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if onCommandLine[f.Name] || envErr != nil {
			return
		}
		name := "LOCKY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("environment %s=%s: %w", name, v, err)
			}
			fromEnv[f.Name] = true
		}
	})
	return fromEnv, envErr
}

// printUsage writes the usage of --help: every option with its default.
func printUsage(w io.Writer) {
	c, o := Defaults(), Options{}
	fs := newFlagSet(&c, &o)
	fs.SetOutput(w)
	fmt.Fprintln(w, "Usage of locky-gateway (each option is also LOCKY_<NAME> in the environment and a name of the --config file):")
	fs.PrintDefaults()
}

// explainedValue is a flag's value whose Set says what the option wants: the
// flag package says only "parse error", and says it on the command line
// alone. It keeps the first refusal on the command line in *first.
type explainedValue struct {
	flag.Value
	name  string
	first *error
}

func (v explainedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err == nil {
		return nil
	}
	err = explainValue(v.Value, s, err)
	if *v.first == nil {
		*v.first = fmt.Errorf("--%s %s: %w", v.name, s, err)
	}
	return err
}

// IsBoolFlag keeps a bool option usable as a bare --name.
func (v explainedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// explainValue says what kind of value the option takes, from the type of the
// value it holds.
func explainValue(v flag.Value, s string, err error) error {
	g, ok := v.(flag.Getter)
	if !ok {
		return err // the option's own type explains itself
	}
	switch g.Get().(type) {
	case time.Duration:
		_, perr := time.ParseDuration(s)
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return fmt.Errorf("a duration needs a unit: write %sm, %ss or %sh (units ns, us, ms, s, m, h; e.g. 1h30m): %w", s, s, s, perr)
		}
		return fmt.Errorf("want a duration such as 10m, 90s or 1h30m: %w", perr)
	case int, int64, uint, uint64:
		_, perr := strconv.ParseInt(s, 0, 64)
		return fmt.Errorf("want a whole number: %w", perr)
	case bool:
		return errors.New("want true or false")
	}
	return err
}

// commandLineError turns the flag package's error into one that names the
// option and what to write instead.
func commandLineError(fs *flag.FlagSet, args []string, err, setErr error) error {
	if setErr != nil {
		return fmt.Errorf("%w (see --help)", setErr)
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break // where the flag package stops too
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		switch {
		case f == nil:
			return fmt.Errorf("unknown option %s%s (every option: --help)", a, didYouMean(fs, name, "--"))
		case hasValue || isBoolFlag(f):
		case i+1 == len(args):
			return fmt.Errorf("%s needs a value, e.g. %s %s (see --help)", a, a, exampleValue(f))
		default:
			i++ // its value
		}
	}
	return fmt.Errorf("%w (see --help)", err)
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// exampleValue is a value to show in a message about f.
func exampleValue(f *flag.Flag) string {
	if f.DefValue != "" {
		return f.DefValue
	}
	return "VALUE"
}

// didYouMean returns ": did you mean <prefix>name?" for the option nearest to
// name, or "" when none is near. Without a prefix (a config file) it leaves
// out the options of the command line alone.
func didYouMean(fs *flag.FlagSet, name, prefix string) string {
	best := closest(fs, name, prefix != "")
	if best == "" {
		return ""
	}
	return fmt.Sprintf(": did you mean %s%s?", prefix, best)
}

// closest returns the option nearest to name (dashes or underscores, any
// case), or "" when none is near; command-only options count if withCommand.
func closest(fs *flag.FlagSet, name string, withCommand bool) string {
	want := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	best, bestD := "", -1
	fs.VisitAll(func(f *flag.Flag) {
		if !withCommand && commandOnly[f.Name] {
			return
		}
		if d := editDistance(want, f.Name); bestD < 0 || d < bestD {
			best, bestD = f.Name, d
		}
	})
	if bestD < 0 || bestD > max(2, len(want)/3) {
		return ""
	}
	return best
}

// UnknownEnv returns a warning for each LOCKY_* variable of environ (as
// os.Environ gives it) that names no option: a misspelling, most likely,
// which the gateway would otherwise ignore without a word. It warns rather
// than refuses, as an environment is often shared by other programs.
func UnknownEnv(environ []string) []string {
	var c Config
	var o Options
	fs := newFlagSet(&c, &o)
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		opt, ok := strings.CutPrefix(name, "LOCKY_")
		if !ok || name == envUpgradeFDs || name == envUpgradePID || name == EnvUpgradeFailed {
			continue // not an option; the upgrade's own (upgrade.go)
		}
		opt = strings.ToLower(strings.ReplaceAll(opt, "_", "-"))
		if opt == "config" || (fs.Lookup(opt) != nil && !commandOnly[opt]) {
			continue
		}
		w := fmt.Sprintf("environment %s names no option of locky-gateway and is ignored", name)
		if best := closest(fs, opt, false); best != "" {
			w += fmt.Sprintf(": did you mean LOCKY_%s?", strings.ToUpper(strings.ReplaceAll(best, "-", "_")))
		}
		warnings = append(warnings, w)
	}
	return warnings
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// keySources settles where the code keys come from. A key and its file are
// one option in two forms: the one from the higher source (flags, then the
// environment, then the config file) wins, and both from the same source is
// an error. It notes for New's warnings the keys given on the command line
// and those read from a config file that group or other may read.
func (c *Config) keySources(fs *flag.FlagSet, configFile string, getenv func(string) string, onCommandLine, fromEnv, fromFile map[string]bool) error {
	source := func(name string) int {
		switch {
		case fs.Lookup(name).Value.String() == "":
			return 0
		case onCommandLine[name]:
			return 3
		case fromEnv[name]:
			return 2
		case fromFile[name]:
			return 1
		}
		return 0 // a default
	}
	where := []string{"", "in the config file", "in the environment", "on the command line"}
	for _, pair := range [][2]string{{"code-key", "code-key-file"}, {"code-key-previous", "code-key-previous-file"}} {
		a, b := source(pair[0]), source(pair[1])
		switch {
		case a == 0 || b == 0:
		case a == b:
			return fmt.Errorf("--%s and --%s are both set %s: keep one", pair[0], pair[1], where[a])
		case a > b:
			_ = fs.Lookup(pair[1]).Value.Set("") // a string flag: cannot fail
		default:
			_ = fs.Lookup(pair[0]).Value.Set("")
		}
	}
	var onCmd, inFile []string
	for _, name := range []string{"code-key", "code-key-previous"} {
		switch source(name) {
		case 3:
			onCmd = append(onCmd, "--"+name)
		case 1:
			inFile = append(inFile, name)
		}
	}
	c.keysOnCommandLine = strings.Join(onCmd, ", ")
	if len(inFile) > 0 {
		fi, err := os.Stat(configFile)
		if err != nil {
			return fmt.Errorf("cannot read config file: %w", err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 && !inCredentialsDir(configFile, getenv("CREDENTIALS_DIRECTORY")) {
			c.keysInOpenFile = fmt.Sprintf("%s (mode %04o, holding %s)", configFile, perm, strings.Join(inFile, ", "))
		}
	}
	return nil
}

// optionalTime is a flag value holding an RFC 3339 time; empty is the zero time.
type optionalTime struct{ t *time.Time }

func (o optionalTime) String() string {
	if o.t == nil || o.t.IsZero() {
		return ""
	}
	return o.t.Format(time.RFC3339)
}

func (o optionalTime) Set(s string) error {
	if s == "" {
		*o.t = time.Time{}
		return nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time such as 2026-12-31T23:00:00Z: %w", err)
	}
	*o.t = t
	return nil
}

type keyValue struct {
	key, value string
	line       int
}

// readConfigFile reads `name = value` lines; # starts a comment; values may
// be double-quoted.
func readConfigFile(path string) ([]keyValue, error) {
	var out []keyValue
	err := linefile.Read(path, "config file", func(n int, line string) error {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return errors.New("expected `name = value`")
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			uq, err := strconv.Unquote(v)
			if err != nil {
				return fmt.Errorf("bad quoted value: %w", err)
			}
			v = uq
		} else if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		out = append(out, keyValue{k, v, n})
		return nil
	})
	return out, err
}

// Validate checks the configuration and says which option to fix. It lists
// every problem, in the order of the groups below.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	c.validateIdentity(bad)
	c.validateDoors(bad)
	c.validateCodeKeys(bad)
	c.validateDurations(bad)
	c.validateBrokerLimits(bad)
	if c.LockoutMax < c.LockoutBase {
		bad("--lockout-max %s is shorter than --lockout-base %s", c.LockoutMax, c.LockoutBase)
	}
	if c.OutboxMaxBytes < 1<<20 {
		bad("--outbox-max-bytes %d: use at least 1 MiB", c.OutboxMaxBytes)
	}
	c.validateCloud(bad)
	c.validateMetricsPush(bad)
	c.validateLogs(bad)
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}
	return nil
}

// validateIdentity checks the locker id, the data dir and the listen
// addresses, calling bad for each problem.
func (c *Config) validateIdentity(bad func(format string, args ...any)) {
	if c.LockerID == "" || strings.ContainsAny(c.LockerID, "/+#") || len(c.LockerID) > 64 {
		bad("--locker-id %q: must be 1..64 characters without / + #", c.LockerID)
	}
	if c.DataDir == "" {
		bad("--data-dir is empty")
	}
	for name, addr := range map[string]string{"--mqtt-addr": c.MQTTAddr, "--http-addr": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s %q: want host:port: %v", name, addr, err)
		}
	}
}

// validateDoors checks the simulated doors against the door map.
func (c *Config) validateDoors(bad func(format string, args ...any)) {
	if c.SimDoors < 0 || c.SimDoors > 9999 {
		bad("--sim-doors %d: must be 0..9999", c.SimDoors)
	}
	if c.DoorMap != "" && c.SimDoors > 0 {
		bad("--door-map %s drives real doors, and --sim-doors %d simulated ones: set --sim-doors 0", c.DoorMap, c.SimDoors)
	}
}

// validateCodeKeys checks the current and the previous code key: one form
// of each, hex of the right length, not the documentation's example outside
// dev mode, and no end of a rotation without a previous key.
func (c *Config) validateCodeKeys(bad func(format string, args ...any)) {
	if c.CodeKey == "" && c.CodeKeyFile == "" && !c.Dev {
		bad("--code-key is required outside dev mode: give it in a file with --code-key-file (mode 0600) or in LOCKY_CODE_KEY (hex, at least 16 bytes)")
	}
	for _, k := range []struct{ name, key, file string }{
		{"--code-key", c.CodeKey, c.CodeKeyFile}, {"--code-key-previous", c.CodeKeyPrevious, c.CodeKeyPreviousFile},
	} {
		if k.key != "" && k.file != "" {
			bad("%s and %s-file are both set: keep one", k.name, k.name)
		}
		if k.key != "" {
			if _, err := parseCodeKey(k.key); err != nil {
				bad("%s: %v", k.name, err)
			}
		}
	}
	if k, err := parseCodeKey(c.CodeKey); err == nil && c.CodeKeyFile == "" && !c.Dev && isExampleKey(k) {
		bad("--code-key: %v", errExampleKey)
	}
	if !c.CodeKeyPreviousUntil.IsZero() && c.CodeKeyPrevious == "" && c.CodeKeyPreviousFile == "" {
		bad("--code-key-previous-until is set without a previous key: set --code-key-previous-file too, or remove it once the rotation is over")
	}
}

// validateDurations checks the workflow's, the store's and the bridge's
// durations, the simulator's auto-close and the lockout threshold.
func (c *Config) validateDurations(bad func(format string, args ...any)) {
	for name, d := range map[string]time.Duration{"--grace": c.Grace, "--door-timeout": c.DoorTimeout,
		"--left-open-after": c.LeftOpenAfter, "--lockout-window": c.LockoutWindow, "--lockout-base": c.LockoutBase,
		"--lockout-max": c.LockoutMax, "--lockout-reset-after": c.LockoutResetAfter, "--retention": c.Retention, "--outbox-max-age": c.OutboxMaxAge,
		"--cloud-retry-max": c.CloudRetryMax} {
		if d <= 0 {
			bad("%s must be positive, not %s", name, d)
		}
	}
	if c.SimAutoClose < 0 {
		bad("--sim-auto-close must not be negative")
	}
	if c.LockoutThreshold < 1 {
		bad("--lockout-threshold must be at least 1")
	}
}

// validateBrokerLimits checks the limits of the local broker's clients.
func (c *Config) validateBrokerLimits(bad func(format string, args ...any)) {
	for name, n := range map[string]int{"--mqtt-max-clients": c.MQTTMaxClients, "--mqtt-max-per-addr": c.MQTTMaxPerAddr, "--mqtt-max-retained": c.MQTTMaxRetained,
		"--mqtt-max-per-user": c.MQTTMaxPerUser} {
		if n < 1 {
			bad("%s %d: must be at least 1", name, n)
		}
	}
	if c.MQTTConnectTimeout <= 0 {
		bad("--mqtt-connect-timeout must be positive, not %s", c.MQTTConnectTimeout)
	}
}

// validateCloud checks the cloud broker's URL and the bridge's topic
// mappings.
func (c *Config) validateCloud(bad func(format string, args ...any)) {
	if c.CloudURL != "" {
		u, err := url.Parse(c.CloudURL)
		switch {
		case err != nil || (u.Scheme != "mqtt" && u.Scheme != "mqtts") || u.Hostname() == "":
			bad("--cloud-url %q: want mqtt://host:port or mqtts://host:port", c.CloudURL)
		case u.Port() == "":
			// The bridge would take 1883, which on the locker is the local
			// broker's own port: name the port.
			port := map[string]string{"mqtt": "1883", "mqtts": "8883"}[u.Scheme]
			bad("--cloud-url %q has no port: write the cloud broker's, e.g. %s://%s:%s", c.CloudURL, u.Scheme, u.Host, port)
		}
	}
	for name, v := range map[string]string{"--cloud-up": c.CloudUp, "--cloud-down": c.CloudDown} {
		if _, err := ParseMappings(v); err != nil {
			bad("%s: %v", name, err)
		}
	}
	// The cloud reaches the locker's handlers on locky/down/ only: a mapping
	// onto the door commands or the screen would let the cloud broker (and
	// whoever may publish there) open doors and enter codes past the
	// workflow.
	if down, err := ParseMappings(c.CloudDown); err == nil {
		for _, m := range down {
			if m.To != "locky/down/#" && !strings.HasPrefix(m.To, contract.TopicDownPrefix) {
				bad("--cloud-down %s=%s: a cloud message may only land below %s (the back-end's topics)", m.From, m.To, contract.TopicDownPrefix)
			}
		}
	}
}

// validateMetricsPush checks the push URL and its interval, when set.
func (c *Config) validateMetricsPush(bad func(format string, args ...any)) {
	if c.MetricsPushURL == "" {
		return
	}
	if u, err := url.Parse(c.MetricsPushURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		bad("--metrics-push-url %q: want http://host:port/api/v1/import/prometheus", c.MetricsPushURL)
	}
	if c.MetricsPushInterval <= 0 {
		bad("--metrics-push-interval must be positive")
	}
}

// validateLogs checks the log format and level.
func (c *Config) validateLogs(bad func(format string, args ...any)) {
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("--log-format %q: use text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("--log-level %q: use debug, info, warn or error", c.LogLevel)
	}
}

// ParseMappings parses topic mappings written FROM=TO@QOS, comma-separated,
// as the bridge takes them. An empty string gives none (the bridge's defaults).
func ParseMappings(s string) ([]bridge.Mapping, error) {
	var out []bridge.Mapping
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		from, rest, ok := strings.Cut(part, "=")
		to, qos, ok2 := strings.Cut(rest, "@")
		if !ok || !ok2 || from == "" || to == "" || (qos != "0" && qos != "1") {
			return nil, fmt.Errorf("%q: want FROM=TO@QOS with QOS 0 or 1, e.g. locky/up/#=lockers/{id}/up/#@1", part)
		}
		out = append(out, bridge.Mapping{From: from, To: to, QoS: qos[0] - '0'})
	}
	return out, nil
}

// exampleCodeKey is the code key that docker/locky.example.conf once
// published. Anyone can hash codes with it, so a production locker refuses
// it (and any key that is the start of it).
var exampleCodeKey, _ = hex.DecodeString("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")

// errExampleKey is why a locker outside dev mode refuses the example key.
var errExampleKey = errors.New("this is the example key from the documentation, known to everyone: generate the locker's own with `openssl rand -hex 32` (into a file of mode 0600 for --code-key-file) and give it to the back-end")

func isExampleKey(k []byte) bool { return len(k) > 0 && bytes.HasPrefix(exampleCodeKey, k) }

// Check looks at what the configuration names beyond its own text, as New
// will, without changing anything: the data dir can be created or written, the
// code key files are private and readable and hold a key of the locker's
// own, the users file reads. Its error says what to fix. The warnings are for
// what may be right: a listen address that is taken now (by the gateway that
// this configuration is for, when it runs) and code keys where other users
// can read them.
func Check(cfg Config) (warnings []string, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var errs []error
	if err := checkDataDir(cfg.DataDir); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkCodeKeys(cfg)...)
	warnings, fileErrs := checkFiles(cfg)
	errs = append(errs, fileErrs...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	listenWarnings, err := checkListenAddrs(cfg)
	if err != nil {
		return nil, err
	}
	warnings = append(warnings, listenWarnings...)
	return append(warnings, keyWarnings(cfg)...), nil
}

// checkCodeKeys reads the code key files, and the dev code key when it is
// the one in use, and refuses the example key outside dev mode.
func checkCodeKeys(cfg Config) []error {
	var errs []error
	keyFile := func(name, path string) []byte {
		if path == "" {
			return nil
		}
		k, err := ReadCodeKeyFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", name, err))
		}
		return k
	}
	current := keyFile("code-key-file", cfg.CodeKeyFile)
	if cfg.CodeKey == "" && cfg.CodeKeyFile == "" && cfg.Dev {
		if err := checkDevCodeKey(cfg.DataDir); err != nil {
			errs = append(errs, err)
		}
	}
	if !cfg.Dev && isExampleKey(current) {
		errs = append(errs, fmt.Errorf("--code-key-file %s: %w", cfg.CodeKeyFile, errExampleKey))
	}
	keyFile("code-key-previous-file", cfg.CodeKeyPreviousFile)
	return errs
}

// checkDevCodeKey reports a dev code key in dataDir that cannot be read or
// parsed; none there yet is fine, New generates it.
func checkDevCodeKey(dataDir string) error {
	path := filepath.Join(dataDir, "code.key")
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("cannot read the dev code key: %w", err)
	}
	if _, err := parseCodeKey(string(raw)); err != nil {
		return fmt.Errorf("the dev code key %q is damaged (%w); restore it from a backup: without it no stored code matches", path, err)
	}
	return nil
}

// checkFiles reads the door map and the users file and opens the cloud's
// certificate files. It warns of the locker's doors that the door map does
// not name.
func checkFiles(cfg Config) (warnings []string, errs []error) {
	if cfg.DoorMap != "" {
		if m, err := ReadDoorMap(cfg.DoorMap); err != nil {
			errs = append(errs, fmt.Errorf("--door-map: %w", err))
		} else {
			warnings = append(warnings, unmappedDoors(m, cfg)...)
		}
	}
	if cfg.MQTTUsers != "" {
		if _, err := broker.ReadUsers(cfg.MQTTUsers); err != nil {
			errs = append(errs, fmt.Errorf("--mqtt-users: %w", err))
		}
	}
	for _, f := range []struct{ name, path string }{{"cloud-ca-file", cfg.CloudCAFile}, {"cloud-cert-file", cfg.CloudCertFile}, {"cloud-key-file", cfg.CloudKeyFile}} {
		if f.path == "" {
			continue
		}
		if fh, err := os.Open(f.path); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", f.name, err))
		} else if err := fh.Close(); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", f.name, err))
		}
	}
	return warnings, errs
}

// checkListenAddrs warns of each listen address that cannot be listened on
// now.
func checkListenAddrs(cfg Config) ([]string, error) {
	var warnings []string
	for _, a := range []struct{ name, addr string }{{"mqtt-addr", cfg.MQTTAddr}, {"http-addr", cfg.HTTPAddr}} {
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("--%s %s cannot be listened on now (%v): right if the gateway of this configuration is running; otherwise another program holds it: set --%s", a.name, a.addr, err, a.name))
			continue
		}
		if err := ln.Close(); err != nil {
			return nil, fmt.Errorf("--%s %s: %w", a.name, a.addr, err)
		}
	}
	return warnings, nil
}

// keyWarnings warns, outside dev mode, of code keys that other local users
// can read: on the command line or in an open config file.
func keyWarnings(cfg Config) []string {
	var warnings []string
	if !cfg.Dev && cfg.keysOnCommandLine != "" {
		warnings = append(warnings, "a code key is on the command line ("+cfg.keysOnCommandLine+"), where every local user can read it: use --code-key-file (mode 0600) or LOCKY_CODE_KEY")
	}
	if !cfg.Dev && cfg.keysInOpenFile != "" {
		warnings = append(warnings, "a code key is in a config file that group or other may read, "+cfg.keysInOpenFile+": chmod 600 it, or move the key to --code-key-file")
	}
	return warnings
}

// checkDataDir reports what keeps the gateway from using dir as its data dir:
// a file in its place or on its path, or a directory this user cannot write.
// A dir that does not exist yet is fine when it can be created.
func checkDataDir(dir string) error {
	exists, err := checkDataDirPath(dir)
	if err != nil || !exists {
		return err
	}
	return checkDataDirWritable(dir)
}

// unmappedDoors warns of each door of the locker's store that the door map
// does not name: its codes would end in door_fault. A warning, not an error:
// one unmapped door must not keep the other doors of the locker shut.
func unmappedDoors(m DoorMap, cfg Config) []string {
	doors, err := store.ReadDoors(filepath.Join(cfg.DataDir, "locky.db"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil // a new locker: its doors come from the back-end
	case err != nil:
		return []string{fmt.Sprintf("cannot check the doors of --data-dir against --door-map (%v); the gateway logs the unmapped ones at start", err)}
	}
	var warnings []string
	for _, d := range doors {
		if !m.Maps(d.ID) {
			warnings = append(warnings, fmt.Sprintf("door %d of the locker is not in --door-map %s: it cannot open until a `door %d …` line names it", d.ID, cfg.DoorMap, d.ID))
		}
	}
	return warnings
}

// checkDataDirPath reports whether dir exists, and an error if it is a file,
// or cannot be created because of a file on its path or a parent this user
// cannot write.
func checkDataDirPath(dir string) (exists bool, err error) {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return true, fmt.Errorf("--data-dir %s is a file, not a directory: set --data-dir to a directory (it is created if missing)", dir)
		}
		return true, nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) { // the nearest existing ancestor
		pfi, perr := os.Stat(p)
		switch {
		case perr != nil && p != filepath.Dir(p):
			continue
		case perr != nil:
			return false, fmt.Errorf("cannot use --data-dir %s: %w", dir, err)
		case !pfi.IsDir():
			return false, fmt.Errorf("--data-dir %s cannot be created: %s is a file, not a directory: set --data-dir to a directory", dir, p)
		case !errors.Is(err, os.ErrNotExist):
			return false, fmt.Errorf("cannot use --data-dir %s (set --data-dir to a directory this user can write): %w", dir, err)
		}
		if err := probeWritable(p); err != nil {
			return false, fmt.Errorf("--data-dir %s does not exist and cannot be created: this user (uid %d) cannot write %s: create it for the gateway's user, or set --data-dir to a directory it can write: %w", dir, os.Getuid(), p, err)
		}
		return false, nil
	}
}

// checkDataDirWritable reports an error if this user cannot create files in
// the existing directory dir.
func checkDataDirWritable(dir string) error {
	if err := probeWritable(dir); err != nil {
		return fmt.Errorf("--data-dir %s is not writable by this user (uid %d): give it to the user the gateway runs as (chown), or set --data-dir to a directory it can write: %w", dir, os.Getuid(), err)
	}
	return nil
}

// probeWritable creates and removes a file in dir.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".locky-write-check-*")
	if err != nil {
		return err
	}
	return errors.Join(f.Close(), os.Remove(f.Name()))
}
