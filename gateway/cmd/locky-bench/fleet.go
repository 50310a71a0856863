package main

import (
	"context"
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

// fleetConfig is the size of a `locky-bench fleet` run.
type fleetConfig struct {
	sizes     []int         // fleet sizes, run in this order
	events    int           // events each locker appends in each traffic phase
	limit     time.Duration // the longest wait for the fleet to come online, or for its events
	dir       string        // parent of the work dir (the lockers' databases); "" means $TMPDIR
	mosquitto string        // Mosquitto binary
	passwd    string        // mosquitto_passwd binary
}

// maxFleet bounds a fleet size: locker ids are L0001 to L9999.
const maxFleet = 9999

func parseFleetFlags(args []string, stderr io.Writer) (fleetConfig, error) {
	var c fleetConfig
	fs := flag.NewFlagSet("locky-bench fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("fleet-sizes", "100,1000,2000", "fleet sizes to run, comma-separated, each 1.."+strconv.Itoa(maxFleet))
	fs.IntVar(&c.events, "events", 20, "events each locker appends to its outbox in each of the two traffic phases")
	fs.DurationVar(&c.limit, "fleet-limit", 3*time.Minute, "the longest wait for the whole fleet to be online, and for its events")
	fs.StringVar(&c.dir, "dir", "", "where the lockers' outbox databases go (default $TMPDIR); its file system's fsync is part of each append")
	fs.StringVar(&c.mosquitto, "mosquitto", "/usr/sbin/mosquitto", "Mosquitto binary (Debian package mosquitto)")
	fs.StringVar(&c.passwd, "mosquitto-passwd", "mosquitto_passwd", "mosquitto_passwd binary, which hashes the password file")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q; the fleet's options are flags (see fleet -help)", fs.Arg(0))
	}
	var err error
	if c.sizes, err = parseSizes(*sizes); err != nil {
		return c, err
	}
	if c.events < 2 {
		return c, fmt.Errorf("-events %d: at least 2 (the restart comes half-way through)", c.events)
	}
	if _, err := os.Stat(c.mosquitto); err != nil {
		return c, fmt.Errorf("mosquitto not found (apt-get install mosquitto, or set -mosquitto): %w", err)
	}
	if _, err := exec.LookPath(c.passwd); err != nil {
		return c, fmt.Errorf("mosquitto_passwd not found (package mosquitto, or set -mosquitto-passwd): %w", err)
	}
	return c, nil
}

// parseSizes parses -fleet-sizes: "100,1000,2000".
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxFleet {
			return nil, fmt.Errorf("-fleet-sizes %q: %q is not a number of lockers from 1 to %d", s, f, maxFleet)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// fdsPerLocker are the file descriptors a locker holds in the bench: its
// database, its bridge's connection and the proxy's two.
const fdsPerLocker = 4

// runFleet runs `locky-bench fleet`: one fleet after the other, each against
// a Mosquitto of its own, then the report. A size that hits a limit is
// reported with it, and the larger ones are not run.
func runFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFleetFlags(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "locky-bench fleet: "+format+"\n", a...) }
	rep := fleetReport{cfg: cfg, loadStart: loadAverage()}
	if rep.nofile, err = raiseFileLimit(); err != nil {
		return err
	}
	logf("RLIMIT_NOFILE raised to %d (the hard limit); Mosquitto inherits it", rep.nofile)
	work, err := os.MkdirTemp(cfg.dir, "locky-fleet-")
	if err != nil {
		return fmt.Errorf("cannot create a work dir (set -dir): %w", err)
	}
	defer os.RemoveAll(work)
	for _, n := range cfg.sizes {
		r := fleetResult{n: n}
		if need := uint64(fdsPerLocker*n + 100); need > rep.nofile {
			r.limit = fmt.Sprintf("not run: needs about %d file descriptors, RLIMIT_NOFILE is %d; raise the hard limit (ulimit -Hn, LimitNOFILE=)", need, rep.nofile)
		} else {
			logf("fleet of %d lockers, %d events each per traffic phase", n, cfg.events)
			r, err = fleetRun(ctx, cfg, n, filepath.Join(work, strconv.Itoa(n)), logf)
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err != nil {
				r.limit = err.Error()
			}
		}
		rep.results = append(rep.results, r)
		if r.limit != "" {
			logf("fleet of %d lockers: %s", n, r.limit)
			break
		}
	}
	rep.loadEnd = loadAverage()
	rep.machine = describeMachine(ctx, cfg.mosquitto)
	printFleetReport(stdout, rep)
	return nil
}

// raiseFileLimit raises RLIMIT_NOFILE's soft limit to its hard limit and
// returns it. It is set explicitly so that the children (Mosquitto) inherit
// it: Go raises its own limit at start but restores the old one in children.
func raiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("cannot read RLIMIT_NOFILE: %w", err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("cannot raise RLIMIT_NOFILE to %d: %w", l.Max, err)
	}
	return l.Cur, nil
}

// fleetRun measures one fleet of n lockers; on an error, the result holds
// what was measured until then.
func fleetRun(ctx context.Context, cfg fleetConfig, n int, dir string, logf func(string, ...any)) (fleetResult, error) {
	res := fleetResult{n: n}
	f, err := startFleetCloud(ctx, cfg, n, dir)
	if err != nil {
		return res, err
	}
	defer f.close()
	base, err := readBenchMemory()
	if err != nil {
		return res, err
	}
	logf("%d lockers: opening the outboxes and starting the bridges", n)
	if err := f.startLockers(ctx, dir); err != nil {
		return res, err
	}
	if err := f.measureStart(ctx, &res, base); err != nil {
		return res, f.withBridgeLog(err)
	}
	logf("%d lockers online in %s; restarting the cloud broker (idle)", n, secs(res.online.max()))
	if res.restart, res.reonline, err = f.restartAndWait(ctx); err != nil {
		return res, f.withBridgeLog(err)
	}
	logf("%d lockers online again in %s; traffic: %d events", n, secs(res.reonline.max()), n*cfg.events)
	if err := f.measureTraffic(ctx, &res); err != nil {
		return res, f.withBridgeLog(err)
	}
	logf("%d events in %s; traffic again, with a cloud restart in the middle", n*cfg.events, secs(res.traffic.wall))
	if err := f.measureTrafficRestart(ctx, &res); err != nil {
		return res, f.withBridgeLog(err)
	}
	res.brokerPeak, res.brokerCPU = f.broker.peakAndCPU()
	res.bridgeErrors, res.lastError = f.log.get()
	return res, nil
}

// measureStart waits for the fleet's first connections, then takes the
// memory of Mosquitto and of the bench with every locker online.
func (f *fleetCloud) measureStart(ctx context.Context, res *fleetResult, base benchMemory) error {
	var err error
	if res.online, err = f.waitLinks(ctx, true, f.started); err != nil {
		return err
	}
	if res.brokerIdle, err = readMemory(f.broker.proc.pid()); err != nil {
		return err
	}
	m, err := readBenchMemory()
	if err != nil {
		return err
	}
	res.perLocker = m.minus(base).per(f.n)
	return nil
}

// restartAndWait restarts the cloud broker and waits until every locker is
// online again: the times of each, from the restarted broker's first accept.
func (f *fleetCloud) restartAndWait(ctx context.Context) (restartTimes, sample, error) {
	rt, err := f.restart(ctx)
	if err != nil {
		return rt, nil, err
	}
	each, err := f.waitLinks(ctx, true, rt.accepting)
	return rt, each, err
}

// measureTraffic has every locker append cfg.events events at once, with the
// link up, and times their arrival at the back-end consumer.
func (f *fleetCloud) measureTraffic(ctx context.Context, res *fleetResult) error {
	cpu0, err := procCPU(f.broker.proc.pid())
	if err != nil {
		return err
	}
	t := f.startTraffic(ctx, f.cfg.events)
	err = f.awaitTraffic(ctx, t, &res.traffic)
	cpu1, cpuErr := procCPU(f.broker.proc.pid())
	res.trafficCPU = cpu1 - cpu0
	return errors.Join(err, cpuErr)
}

// measureTrafficRestart is measureTraffic with a restart of the cloud broker
// once the consumer has half of the events: what is lost or duplicated.
func (f *fleetCloud) measureTrafficRestart(ctx context.Context, res *fleetResult) error {
	total := f.n * f.cfg.events
	t := f.startTraffic(ctx, f.cfg.events)
	if err := f.backend.waitDistinct(ctx, f.backend.distinctNow()+total/2, f.cfg.limit); err != nil {
		return fmt.Errorf("before the restart in the middle of the traffic: %w", err)
	}
	var err error
	if res.midRestart, res.midReonline, err = f.restartAndWait(ctx); err != nil {
		return fmt.Errorf("restart in the middle of the traffic: %w", err)
	}
	err = f.awaitTraffic(ctx, t, &res.restarted)
	res.afterRestart = f.backend.countAfter(t.keys, res.midRestart.accepting)
	return err
}
