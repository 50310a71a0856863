package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	bridge "github.com/locky-edge/locky/backend-bridge"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// fleetCloud is one fleet run: the cloud Mosquitto, the back-end consumer
// connected to it directly, the proxy the lockers connect through, and the
// lockers.
type fleetCloud struct {
	cfg     fleetConfig
	n       int
	sup     *supervisor
	broker  *cloudBroker
	backend *consumer
	proxy   *proxy
	log     *errorLog // the lockers' warnings and errors

	lockers []*fleetLocker
	started time.Time // the bridges' Run calls
	cancel  context.CancelFunc
	running sync.WaitGroup // the bridges' Run calls
}

// fleetLocker is one locker of the fleet: its outbox and its bridge, as in
// the gateway.
type fleetLocker struct {
	id     string
	store  *store.Store
	bridge *bridge.Bridge
}

func lockerID(i int) string { return fmt.Sprintf("L%04d", i+1) }

// acceptAll is the locker's broker as the fleet's bridges see it: it takes
// every downstream message (the bench sends none).
type acceptAll struct{}

func (acceptAll) Deliver(string, []byte, byte) error { return nil }

// startFleetCloud starts the cloud broker for n lockers, the back-end
// consumer and the lockers' proxy.
func startFleetCloud(ctx context.Context, cfg fleetConfig, n int, dir string) (_ *fleetCloud, err error) {
	f := &fleetCloud{cfg: cfg, n: n, sup: &supervisor{}, log: &errorLog{}}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	if f.broker, err = newCloudBroker(ctx, cfg, n, filepath.Join(dir, "cloud")); err != nil {
		return f, err
	}
	if err = f.broker.start(ctx, f.sup); err != nil {
		return f, err
	}
	if f.backend, err = newConsumer(ctx, f.broker.proc.addr, f.broker.backendPassword); err != nil {
		return f, err
	}
	f.proxy, err = newProxy(f.broker.proc.addr)
	return f, err
}

// startLockers opens n outboxes and starts n bridges to the proxy, all at
// once.
func (f *fleetCloud) startLockers(ctx context.Context, dir string) error {
	logger := slog.New(f.log)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("cannot make a code key: %w", err)
	}
	for i := range f.n {
		id := lockerID(i)
		s, err := store.Open(store.Config{Path: filepath.Join(dir, id+".db"), CodeKey: key, Logger: logger})
		if err != nil {
			return fmt.Errorf("locker %s: cannot open its outbox (file descriptors? RLIMIT_NOFILE): %w", id, err)
		}
		l := &fleetLocker{id: id, store: s}
		f.lockers = append(f.lockers, l)
		// LogEvery 1 ns: every failed attempt is logged, so counted.
		if l.bridge, err = bridge.New(bridge.Config{LockerID: id, URL: "mqtt://" + f.proxy.addr, Username: id,
			Password: f.broker.passwords[i], Outbox: s, Local: acceptAll{}, Logger: logger, LogEvery: time.Nanosecond}); err != nil {
			return fmt.Errorf("locker %s: %w", id, err)
		}
	}
	ctx, f.cancel = context.WithCancel(ctx)
	f.started = time.Now()
	for _, l := range f.lockers {
		f.running.Go(func() {
			if err := l.bridge.Run(ctx); err != nil {
				f.log.add(fmt.Sprintf("locker %s: bridge: %v", l.id, err))
			}
		})
	}
	return nil
}

// close stops the lockers, then the consumer, the proxy and the broker.
func (f *fleetCloud) close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.running.Wait()
	for _, l := range f.lockers {
		if err := l.store.Close(); err != nil {
			f.log.add(fmt.Sprintf("locker %s: closing its outbox: %v", l.id, err))
		}
	}
	if f.backend != nil {
		f.backend.close()
	}
	if f.proxy != nil {
		f.proxy.close()
	}
	f.sup.killAll() // the broker's end is of no interest
}

// withBridgeLog adds the lockers' last error to err: why they did not get
// through, if that is why.
func (f *fleetCloud) withBridgeLog(err error) error {
	n, last := f.log.get()
	if n == 0 {
		return err
	}
	return fmt.Errorf("%w (the bridges logged %d warnings and errors, the last: %s)", err, n, last)
}

// linkPoll is how often waitLinks looks at the bridges: the resolution of
// the online times.
const linkPoll = 5 * time.Millisecond

// waitLinks waits until every bridge's link is up (or down) and returns, for
// each, the time from since to when it was first seen so. Past cfg.limit it
// says how many are not.
func (f *fleetCloud) waitLinks(ctx context.Context, up bool, since time.Time) (sample, error) {
	at := make(sample, len(f.lockers))
	done := make([]bool, len(f.lockers))
	left := len(f.lockers)
	deadline := time.Now().Add(f.cfg.limit)
	tick := time.NewTicker(linkPoll)
	defer tick.Stop()
	for {
		now := time.Now()
		for i, l := range f.lockers {
			if !done[i] && l.bridge.LinkUp() == up {
				done[i], at[i] = true, now.Sub(since)
				left--
			}
		}
		switch {
		case left == 0:
			return at, nil
		case now.After(deadline):
			state := map[bool]string{true: "online", false: "offline"}[up]
			return at, fmt.Errorf("%d of %d lockers not %s after %s (-fleet-limit)", left, len(f.lockers), state, f.cfg.limit)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return at, context.Cause(ctx)
		}
	}
}

// restartTimes are the steps of a cloud broker restart.
type restartTimes struct {
	exit      time.Duration // SIGTERM → the broker exited (its persistence file written)
	down      time.Duration // SIGTERM → every bridge saw its link down
	ready     time.Duration // exec of the new broker → it accepts connections
	hold      time.Duration // it accepts → the consumer reconnected → the proxy listens again
	accepting time.Time     // when the restarted broker accepted connections
}

// restart restarts the cloud broker with SIGTERM, on the same port with the
// same persistence. Mosquitto 2.0.11 queues nothing for a session that was
// connected at its stop until that session reconnects, so the lockers' proxy
// stops listening before the stop and listens again only once the back-end
// consumer has reconnected: for the lockers the broker is down until then.
func (f *fleetCloud) restart(ctx context.Context) (restartTimes, error) {
	var rt restartTimes
	if err := f.proxy.pause(); err != nil {
		return rt, err
	}
	stopped := time.Now()
	if err := f.broker.stop(); err != nil {
		return rt, err
	}
	rt.exit = time.Since(stopped)
	if _, err := f.waitLinks(ctx, false, stopped); err != nil {
		return rt, err
	}
	rt.down = time.Since(stopped)
	if err := f.broker.start(ctx, f.sup); err != nil {
		return rt, fmt.Errorf("restarting the cloud broker: %w", err)
	}
	rt.ready, rt.accepting = f.broker.proc.ready, time.Now()
	if err := f.backend.reconnect(ctx, f.broker.proc.addr); err != nil {
		return rt, err
	}
	if err := f.proxy.resume(); err != nil {
		return rt, err
	}
	rt.hold = time.Since(rt.accepting)
	return rt, nil
}

// traffic is one traffic phase: each locker appends its events, one commit
// each as the gateway does, all lockers at once.
type traffic struct {
	start    time.Time
	keys     []string      // the consumer's keys of every event appended
	appended time.Duration // start → the last append committed
	err      error
	done     chan struct{} // closed once every locker appended its events
}

func (f *fleetCloud) startTraffic(ctx context.Context, k int) *traffic {
	t := &traffic{start: time.Now(), done: make(chan struct{})}
	keys := make([][]string, len(f.lockers))
	errs := make([]error, len(f.lockers))
	var wg sync.WaitGroup
	for i, l := range f.lockers {
		wg.Go(func() { keys[i], errs[i] = l.appendEvents(ctx, k) })
	}
	go func() {
		wg.Wait()
		t.appended = time.Since(t.start)
		for i := range keys {
			t.keys = append(t.keys, keys[i]...)
		}
		t.err = errors.Join(errs...)
		close(t.done)
	}()
	return t
}

// appendEvents appends k events to the locker's outbox through the store's
// API of the gateway's door cycles, and returns their consumer keys.
func (l *fleetLocker) appendEvents(ctx context.Context, k int) ([]string, error) {
	keys := make([]string, 0, k)
	for i := range k {
		if err := ctx.Err(); err != nil {
			return keys, err
		}
		ev := contract.Event{Type: contract.EventStored, Reservation: fmt.Sprintf("R%d", i), Door: 1 + i%12, Status: contract.StatusStored}
		out, _, err := l.store.AppendEvent(time.Now(), ev, nil)
		if err != nil {
			return keys, fmt.Errorf("locker %s: cannot append an event: %w", l.id, err)
		}
		keys = append(keys, eventKey(l.id, out.EventID))
	}
	return keys, nil
}

// awaitTraffic waits until the consumer has every event of t, or none came
// for stallLimit, and counts what is lost and duplicated.
func (f *fleetCloud) awaitTraffic(ctx context.Context, t *traffic, res *trafficResult) error {
	select {
	case <-t.done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if t.err != nil {
		return t.err
	}
	res.events, res.appended = len(t.keys), t.appended
	last, err := f.backend.waitKeys(ctx, t.keys, f.cfg.limit)
	res.wall = last.Sub(t.start)
	res.lost, res.duplicates, res.redelivered = f.backend.count(t.keys)
	return err
}
