// Command locky-bench measures the locker gateway end to end, from outside,
// as the back-end, the touchscreen and a door board see it over MQTT: start
// to ready, memory, downstream upsert to ack, code to door command, full door
// cycles, the broker's throughput and round trip, and the cloud bridge (a
// door closing to its event at the cloud broker, the outbox's replay after an
// outage). It builds the gateway, runs it as a child process with no
// simulated doors (the bench plays the doors), runs a Mosquitto broker beside
// it for comparison and another as the cloud broker, and prints a Markdown
// table (SPEC §9) on stdout; progress goes to stderr.
//
//	go run ./gateway/cmd/locky-bench
//	go run ./gateway/cmd/locky-bench -cycles 500 -flood 5000 -outage 2000   # quicker
//
// `locky-bench fleet` measures instead how far one cloud Mosquitto carries a
// fleet of lockers, each a real bridge with its own outbox, all in the bench
// process (fleet.go):
//
//	go run ./gateway/cmd/locky-bench fleet -fleet-sizes 100,1000,2000 -events 20
//
// `locky-bench upgrades` measures what the screen and a door board see
// across upgrades in place of one gateway, beside plain stop/starts
// (upgrades*.go):
//
//	go run ./gateway/cmd/locky-bench upgrades -upgrades 20 -code-every 20ms
//
// Linux only: it reads /proc for memory and the CPU model.
//
// Its place in the layering: a program on top; it runs the gateway as its
// own binary and the bridge and the store in process, and measures them from
// outside.
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
	"path/filepath"
	"syscall"
	"time"
)

// config is the size of the run. The defaults finish in a minute to a minute
// and a half on a 2-core x86 machine: the replay waits for the gateway's
// reconnect back-off, up to half a minute after an outage of ten seconds.
type config struct {
	startRuns    int           // start-to-ready runs of each program
	doors        int           // doors created through locky/down/doors
	reservations int           // reservations upserted: one arriving per door, the rest cancelled
	cycles       int           // full door cycles
	cycleWorkers int           // door cycles in flight at once (on different doors)
	flood        int           // messages of the broker throughput run
	roundTrips   int           // messages of the broker round-trip run, one at a time
	cloudCycles  int           // door cycles with the cloud link up
	outage       int           // upstream messages produced while the cloud broker is down
	settle       time.Duration // wait after start before reading the idle RSS
	mosquitto    string        // Mosquitto binary
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("locky-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.startRuns, "start-runs", 10, "start-to-ready runs of the gateway and of Mosquitto")
	fs.IntVar(&c.doors, "doors", 100, "doors created through locky/down/doors")
	fs.IntVar(&c.reservations, "reservations", 10000, "reservations upserted: one arriving per door, the rest cancelled")
	fs.IntVar(&c.cycles, "cycles", 2000, "full door cycles (code, command, open, display, close, event)")
	fs.IntVar(&c.cycleWorkers, "cycle-workers", 1, "door cycles in flight at once, on different doors; must divide -doors")
	fs.IntVar(&c.flood, "flood", 20000, "messages of the broker throughput run (QoS 1, 64 bytes)")
	fs.IntVar(&c.roundTrips, "round-trips", 2000, "messages of the broker round-trip run, one at a time")
	fs.IntVar(&c.cloudCycles, "cloud-cycles", 1000, "door cycles with the cloud link up (door closed → event at the cloud broker)")
	fs.IntVar(&c.outage, "outage", 10000, "upstream messages (acks of door upserts) produced while the cloud broker is down, then replayed")
	fs.DurationVar(&c.settle, "settle", time.Second, "wait after start before reading the idle RSS")
	fs.StringVar(&c.mosquitto, "mosquitto", "/usr/sbin/mosquitto", "Mosquitto binary (Debian package mosquitto)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q; options are flags (see -help), the commands are fleet and upgrades (see fleet -help, upgrades -help)", fs.Arg(0))
	}
	switch {
	case c.startRuns < 1 || c.flood < 1 || c.roundTrips < 1 || c.cycles < 1 || c.cloudCycles < 1 || c.outage < 1:
		return c, errors.New("-start-runs, -cycles, -flood, -round-trips, -cloud-cycles and -outage must be at least 1")
	case c.doors < 1 || c.doors > 9999:
		return c, fmt.Errorf("-doors %d: must be 1..9999", c.doors)
	case c.reservations < c.doors:
		return c, fmt.Errorf("-reservations %d: at least one per door (-doors %d)", c.reservations, c.doors)
	case c.reservations > 9_999_999:
		return c, fmt.Errorf("-reservations %d: at most 9999999 (codes are 8 digits)", c.reservations)
	case c.cycleWorkers < 1 || c.doors%c.cycleWorkers != 0:
		return c, fmt.Errorf("-cycle-workers %d: must divide -doors %d", c.cycleWorkers, c.doors)
	}
	if _, err := os.Stat(c.mosquitto); err != nil {
		return c, fmt.Errorf("mosquitto not found (apt-get install mosquitto, or set -mosquitto): %w", err)
	}
	return c, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "locky-bench:", err)
		os.Exit(1)
	}
}

// run measures everything in order and prints the report. Every child process
// is killed before it returns, whatever happened.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "fleet" {
		return runFleet(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "upgrades" {
		return runUpgrades(ctx, args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "locky-bench: "+format+"\n", a...) }
	work, err := os.MkdirTemp("", "locky-bench-")
	if err != nil {
		return fmt.Errorf("cannot create a work dir: %w", err)
	}
	defer os.RemoveAll(work)
	sup := &supervisor{}
	defer sup.killAll()

	logf("building the gateway")
	bin := filepath.Join(work, "locky-gateway")
	if err := buildGateway(ctx, bin); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("cannot make a code key: %w", err)
	}
	gw := gatewayCmd{bin: bin, codeKey: hex.EncodeToString(key)}
	res := results{loadStart: loadAverage()}

	if err := measureStarts(ctx, cfg, sup, gw, work, &res, logf); err != nil {
		return err
	}
	if err := benchGateway(ctx, cfg, sup, gw, filepath.Join(work, "gateway"), &res, logf); err != nil {
		return err
	}
	if err := benchMosquitto(ctx, cfg, sup, filepath.Join(work, "mosquitto"), &res, logf); err != nil {
		return err
	}
	if res.cloud, err = benchCloud(ctx, cfg, sup, gw, filepath.Join(work, "cloud"), logf); err != nil {
		return fmt.Errorf("cloud bridge: %w", err)
	}
	res.loadEnd = loadAverage()
	res.machine = describeMachine(ctx, cfg.mosquitto)
	printReport(stdout, cfg, &res)
	return nil
}

// measureStarts measures the start-to-ready of the gateway and of Mosquitto,
// cfg.startRuns times each, on fresh dirs under work.
func measureStarts(ctx context.Context, cfg config, sup *supervisor, gw gatewayCmd, work string, res *results, logf func(string, ...any)) error {
	var err error
	logf("start-to-ready: %d runs of each", cfg.startRuns)
	if res.gwStart, res.gwStop, err = startRuns(ctx, cfg.startRuns, syscall.SIGTERM, func(i int) (*child, time.Duration, error) {
		p, err := sup.startGateway(ctx, gw, filepath.Join(work, fmt.Sprintf("start-%d", i)))
		if err != nil {
			return nil, 0, err
		}
		logf("gateway start %d: exec → ready %s, of which config → ready %s", i+1, p.ready, p.startup)
		res.gwStartup = append(res.gwStartup, p.startup)
		return p.child, p.ready, nil
	}); err != nil {
		return fmt.Errorf("gateway start-to-ready: %w", err)
	}
	if res.mqStart, _, err = startRuns(ctx, cfg.startRuns, syscall.SIGKILL, func(i int) (*child, time.Duration, error) {
		m, err := sup.startMosquitto(ctx, cfg.mosquitto, filepath.Join(work, fmt.Sprintf("mosquitto-%d", i)))
		if err != nil {
			return nil, 0, err
		}
		logf("mosquitto start %d: exec → accepts %s", i+1, m.ready)
		return m.child, m.ready, nil
	}); err != nil {
		return fmt.Errorf("mosquitto start-to-ready: %w", err)
	}
	return nil
}

// benchGateway runs the workload of SPEC §9 against one gateway: idle RSS,
// doors, reservations (upsert → ack), door cycles, loaded RSS, then the
// broker runs.
func benchGateway(ctx context.Context, cfg config, sup *supervisor, gw gatewayCmd, dir string, res *results, logf func(string, ...any)) error {
	p, err := sup.startGateway(ctx, gw, dir)
	if err != nil {
		return err
	}
	// Waits end early, with the gateway's last log lines, if it dies.
	ctx, cancel := watchGateway(ctx, p)
	defer cancel(nil)

	if err := sleep(ctx, cfg.settle); err != nil {
		return err
	}
	if res.gwIdle, err = readMemory(p.pid()); err != nil {
		return err
	}
	l, err := connectLocker(ctx, p.mqtt)
	if err != nil {
		return err
	}
	defer l.close()

	logf("creating %d doors", cfg.doors)
	if res.firstCall, err = l.createDoors(ctx, cfg.doors); err != nil {
		return err
	}
	if err := upsertsAndCycles(ctx, cfg, p, l, dir, res, logf); err != nil {
		return err
	}
	if res.gwLoaded, err = readMemory(p.pid()); err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Join(dir, "locky.db")); err == nil {
		res.dbSize = fi.Size()
	}
	logf("broker runs against the gateway")
	if res.gwBroker, err = brokerBench(ctx, p.mqtt, cfg.flood, cfg.roundTrips); err != nil {
		return fmt.Errorf("gateway broker: %w", err)
	}
	if res.gwAfter, err = readMemory(p.pid()); err != nil {
		return err
	}
	if res.gwStopLoaded, err = p.stop(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping the loaded gateway: %w", err)
	}
	return nil
}

// upsertsAndCycles upserts the reservations, then runs the door cycles, and
// takes what each wrote to the block layer (the SD card's wear).
func upsertsAndCycles(ctx context.Context, cfg config, p *gatewayProc, l *locker, dir string, res *results, logf func(string, ...any)) error {
	res.wear.fs = fileSystem(dir)
	beforeUpserts, err := readWriteBytes(p.pid())
	if err != nil {
		return err
	}
	_, devBefore, devOK := deviceWrites(dir)
	logf("upserting %d reservations, one at a time", cfg.reservations)
	if res.upserts, res.upsertWall, err = l.upsertReservations(ctx, cfg.reservations, cfg.doors); err != nil {
		return err
	}
	afterUpserts, err := readWriteBytes(p.pid())
	if err != nil {
		return err
	}
	_, devUpserts, ok := deviceWrites(dir)
	devOK = devOK && ok
	logf("running %d door cycles, %d at a time", cfg.cycles, cfg.cycleWorkers)
	if res.cycles, res.cycleWall, err = l.runCycles(ctx, cfg); err != nil {
		return err
	}
	afterCycles, err := readWriteBytes(p.pid())
	if err != nil {
		return err
	}
	res.wear.upserts, res.wear.cycles = afterUpserts-beforeUpserts, afterCycles-afterUpserts
	dev, devCycles, ok := deviceWrites(dir)
	if devOK && ok {
		res.wear.dev, res.wear.devUpserts, res.wear.devCycles = dev, devUpserts-devBefore, devCycles-devUpserts
	}
	return nil
}

// benchMosquitto measures a Mosquitto broker with the same client code.
func benchMosquitto(ctx context.Context, cfg config, sup *supervisor, dir string, res *results, logf func(string, ...any)) error {
	m, err := sup.startMosquitto(ctx, cfg.mosquitto, dir)
	if err != nil {
		return err
	}
	if err := sleep(ctx, cfg.settle); err != nil {
		return err
	}
	if res.mqIdle, err = readMemory(m.pid()); err != nil {
		return err
	}
	logf("broker runs against mosquitto")
	if res.mqBroker, err = brokerBench(ctx, m.addr, cfg.flood, cfg.roundTrips); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}
	if res.mqAfter, err = readMemory(m.pid()); err != nil {
		return err
	}
	_, err = m.stop(syscall.SIGKILL)
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
