package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// swap is one upgrade in place or one stop/start, as the bench timed it.
type swap struct {
	start   time.Time // the upgrade command started, or SIGTERM was sent
	done    time.Time // the command exited 0, or the new process logged ready
	settled time.Time // the screen had its answers after it
}

// phase is the swaps of one mode, and when the mode began and ended.
type phase struct {
	name     string
	from, to time.Time
	swaps    []swap
}

// upgradesRun is one `locky-bench upgrades` run: the installation, the
// gateway process of the moment and the bench's clients.
type upgradesRun struct {
	cfg  upgradesConfig
	in   installation
	gw   fixedGateway
	sup  *supervisor
	proc *child
	logf func(string, ...any)

	pool *pool
	k    *kiosk
	b    *board
	be   *backend
	errs chan error // a client that gave up
}

// runUpgrades runs `locky-bench upgrades` (see upgradesMethod).
func runUpgrades(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseUpgradesFlags(args, stderr)
	if err != nil {
		return err
	}
	r := &upgradesRun{cfg: cfg, sup: &supervisor{}, errs: make(chan error, 4),
		logf: func(format string, a ...any) { fmt.Fprintf(stderr, "locky-bench: "+format+"\n", a...) }}
	work, err := os.MkdirTemp("", "locky-bench-upgrades-")
	if err != nil {
		return fmt.Errorf("cannot create a work dir: %w", err)
	}
	defer os.RemoveAll(work)
	defer r.sup.killAll()
	if r.in, err = install(ctx, work, r.logf); err != nil {
		return err
	}
	if r.gw, err = newFixedGateway(r.in.installed, filepath.Join(work, "data")); err != nil {
		return err
	}
	if r.proc, err = r.gw.start(ctx, r.sup); err != nil {
		return err
	}
	if err := prepareDoors(ctx, r.gw.mqtt, cfg.doors, r.logf); err != nil {
		return err
	}
	rep := upgradesReport{cfg: cfg, loadStart: loadAverage()}
	phases, err := r.measure(ctx)
	if err != nil {
		return err
	}
	rep.loadEnd, rep.machine = loadAverage(), describeHost(ctx)+", "+time.Now().UTC().Format("2006-01-02 15:04 UTC")
	if err := stopGateway(r.proc); err != nil {
		return err
	}
	if err := r.checkStore(); err != nil {
		return err
	}
	rep.modes = []modeResult{r.result(phases[0]), r.result(phases[1])}
	rep.totals = r.totals()
	printUpgradesReport(stdout, rep)
	return nil
}

// prepareDoors creates the doors and one arriving reservation on each.
func prepareDoors(ctx context.Context, addr string, doors int, logf func(string, ...any)) error {
	l, err := connectLocker(ctx, addr)
	if err != nil {
		return err
	}
	defer l.close()
	logf("creating %d doors, one arriving reservation on each", doors)
	if _, err := l.createDoors(ctx, doors); err != nil {
		return err
	}
	_, _, err = l.upsertReservations(ctx, doors, doors)
	return err
}

// measure runs the clients, the upgrades in place, then the stop/starts,
// and waits for the answers still due.
func (r *upgradesRun) measure(ctx context.Context) ([]phase, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if err := r.startClients(ctx, &wg); err != nil {
		return nil, err
	}
	kctx, stopCodes := context.WithCancel(ctx)
	defer stopCodes()
	wg.Go(func() { r.k.run(kctx, r.cfg.codeEvery) })
	if err := r.awaitAnswers(ctx, 20); err != nil {
		return nil, fmt.Errorf("before the first swap: %w", err)
	}
	upgrades, err := r.runPhase(ctx, "upgrade", r.upgradeOnce)
	if err != nil {
		return nil, err
	}
	restarts, err := r.runPhase(ctx, "stop/start", r.restartOnce)
	if err != nil {
		return nil, err
	}
	stopCodes()
	r.logf("waiting for the last answers (%d due) and status events (%d doors)", r.k.unanswered(), r.pool.waiting())
	for deadline := time.Now().Add(5 * time.Second); r.k.unanswered()+r.pool.waiting() > 0 && time.Now().Before(deadline); {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return []phase{upgrades, restarts}, nil
}

// startClients connects the back-end, the board and the screen and keeps
// them connected until ctx ends.
func (r *upgradesRun) startClients(ctx context.Context, wg *sync.WaitGroup) error {
	r.pool = newPool(r.cfg.doors)
	r.k, r.b, r.be = newKiosk(r.pool), newBoard(ctx, r.pool, r.cfg.doorOpen, r.cfg.resync), newBackend(r.pool)
	for _, l := range []*link{r.be.link, r.b.link, r.k.link} {
		l.addr = r.gw.mqtt
		if err := l.connectFirst(ctx); err != nil {
			return err
		}
		wg.Go(func() {
			if err := l.run(ctx); err != nil {
				r.errs <- err
			}
		})
	}
	wg.Go(func() {
		if err := r.be.renewLoop(ctx); err != nil {
			r.errs <- err
		}
	})
	return nil
}

// awaitAnswers waits until the screen has n answers more than now.
func (r *upgradesRun) awaitAnswers(ctx context.Context, n int) error {
	want := r.k.answered() + n
	deadline := time.Now().Add(waitLimit)
	for r.k.answered() < want {
		select {
		case err := <-r.errs:
			return err
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the screen got %d answers of %d within %s; the gateway's last log lines:\n%s",
				r.k.answered()-want+n, n, waitLimit, r.proc.tail.String())
		}
	}
	return nil
}

// runPhase runs cfg.swaps swaps with once, each followed by cfg.after
// answers.
func (r *upgradesRun) runPhase(ctx context.Context, name string, once func(context.Context, int) (swap, error)) (phase, error) {
	ph := phase{name: name, from: time.Now()}
	for i := range r.cfg.swaps {
		s, err := once(ctx, i)
		if err != nil {
			return ph, fmt.Errorf("%s %d: %w", name, i+1, err)
		}
		if err := r.awaitAnswers(ctx, r.cfg.after); err != nil {
			return ph, fmt.Errorf("after %s %d: %w", name, i+1, err)
		}
		s.settled = time.Now()
		ph.swaps = append(ph.swaps, s)
		r.logf("%s %d: done in %s, %d answers again %s after its start", name, i+1,
			s.done.Sub(s.start).Round(time.Millisecond), r.cfg.after, s.settled.Sub(s.start).Round(time.Millisecond))
	}
	ph.to = time.Now()
	return ph, nil
}

// upgradeOnce moves the other build over the installed binary and runs
// `locky-gateway upgrade` with the copy that is never moved.
func (r *upgradesRun) upgradeOnce(ctx context.Context, i int) (swap, error) {
	next := (i + 1) % 2 // vA runs first
	if err := r.in.put(next); err != nil {
		return swap{}, err
	}
	s := swap{start: time.Now()}
	if err := upgrade(ctx, r.in.ctl, r.gw.http, version(next)); err != nil {
		return s, fmt.Errorf("%w; the gateway's last log lines:\n%s", err, r.proc.tail.String())
	}
	s.done = time.Now()
	return s, nil
}

// restartOnce stops the gateway (SIGTERM, its exit awaited) and starts the
// installed binary again on the same data dir and ports.
func (r *upgradesRun) restartOnce(ctx context.Context, _ int) (swap, error) {
	s := swap{start: time.Now()}
	if err := stopGateway(r.proc); err != nil {
		return s, err
	}
	p, err := r.gw.start(ctx, r.sup)
	if err != nil {
		return s, err
	}
	r.proc, s.done = p, time.Now()
	return s, nil
}

// checkStore opens the stopped gateway's database and marks the door cycles
// with no status event at the back-end whose reservation went past them: a
// deposit stored (or further), a pickup delivered.
func (r *upgradesRun) checkStore() error {
	key, err := hex.DecodeString(r.gw.codeKey)
	if err != nil {
		return fmt.Errorf("the code key: %w", err)
	}
	st, err := store.Open(store.Config{Path: filepath.Join(r.gw.dataDir, "locky.db"), CodeKey: key})
	if err != nil {
		return fmt.Errorf("cannot open the gateway's database after its stop: %w", err)
	}
	defer st.Close()
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	for _, c := range r.pool.cycles {
		if !c.event.IsZero() {
			continue
		}
		res, err := st.Reservation(c.res)
		if err != nil || res == nil {
			return fmt.Errorf("reservation %s of a door cycle is not in the database (%v); the store lost it", c.res, err)
		}
		c.inStore = res.Status == contract.StatusDelivered || !c.pickup && res.Status == contract.StatusStored
	}
	return nil
}
