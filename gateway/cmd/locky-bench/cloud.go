package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// benchLocker is the locker id of the gateway linked to the cloud broker.
const benchLocker = "bench-locker"

// cloudConfig is added to the cloud Mosquitto's configuration: the queue and
// in-flight window of docker/cloud-mosquitto/mosquitto.conf, except that the
// queue has no bound at all (0), so that a loss cannot be the broker's.
const cloudConfig = "max_queued_messages 0\nmax_inflight_messages 100\n"

// reconnectLimit bounds the wait for the gateway to come back to a restarted
// cloud broker: its back-off grows to 2 min, with jitter.
const reconnectLimit = 3 * time.Minute

// cloudResult is what benchCloud measures.
type cloudResult struct {
	doors int

	// The door cycles with the link up: from before the door board's publish
	// of "closed" to the status event at the local back-end client and at the
	// cloud subscriber.
	closedLocal, closedCloud sample

	outage        int           // messages produced while the cloud broker was down
	produceWall   time.Duration // producing them (downstream upserts, one at a time)
	outboxBefore  float64       // locky_outbox_messages before the restart
	connectErrors float64       // failed connection attempts of the gateway while the broker was down
	restartReady  time.Duration // exec of the restarted broker → it accepts connections
	replay        replayResult
	outboxAfter   float64 // locky_outbox_messages once everything arrived and was removed
}

// benchCloud runs a gateway linked to a cloud Mosquitto (SPEC §7): door
// cycles with the link up, then an outage of the cloud broker during which
// the locker produces cfg.outage upstream messages, then their replay to the
// restarted broker.
func benchCloud(ctx context.Context, cfg config, sup *supervisor, gw gatewayCmd, dir string, logf func(string, ...any)) (cloudResult, error) {
	res := cloudResult{doors: cfg.doors, outage: cfg.outage}
	cloudDir := filepath.Join(dir, "cloud")
	port, err := freePort()
	if err != nil {
		return res, err
	}
	cloud, err := sup.startMosquittoOn(ctx, cfg.mosquitto, cloudDir, port, cloudConfig)
	if err != nil {
		return res, fmt.Errorf("cloud mosquitto: %w", err)
	}
	gw.cloudURL, gw.lockerID = "mqtt://"+cloud.addr, benchLocker
	p, err := sup.startGateway(ctx, gw, filepath.Join(dir, "gateway"))
	if err != nil {
		return res, err
	}
	ctx, cancel := watchGateway(ctx, p)
	defer cancel(nil)
	if _, err := awaitMetric(ctx, p.http, "locky_bridge_link_up", answerLimit, is(1)); err != nil {
		return res, err
	}

	cloudPrefix := "lockers/" + benchLocker + "/"
	events := newRouter(func(topic string) string {
		if rest, ok := strings.CutPrefix(topic, cloudPrefix+"up/"); ok {
			return "locky/up/" + rest
		}
		return topic
	})
	sub, err := connect(ctx, cloud.addr, "bench-cloud-events", events.receive, cloudPrefix+"up/events")
	if err != nil {
		return res, err
	}
	defer disconnect(sub)
	l, err := connectLocker(ctx, p.mqtt)
	if err != nil {
		return res, err
	}
	defer l.close()
	if err := cloudCycles(ctx, cfg, l, events, &res, logf); err != nil {
		return res, err
	}
	disconnect(sub)
	if err := cloudOutage(ctx, cfg, cloud, p, l, &res, logf); err != nil {
		return res, err
	}
	return res, cloudReplay(ctx, cfg, sup, cloudDir, port, p, &res, logf)
}

// cloudCycles runs cfg.cloudCycles door cycles with the link up, one at a
// time, each checked at the cloud subscriber's router events.
func cloudCycles(ctx context.Context, cfg config, l *locker, events *router, res *cloudResult, logf func(string, ...any)) error {
	logf("cloud: %d doors, one arriving reservation each", cfg.doors)
	if _, err := l.createDoors(ctx, cfg.doors); err != nil {
		return err
	}
	if _, _, err := l.upsertReservations(ctx, cfg.doors, cfg.doors); err != nil {
		return err
	}
	logf("cloud: %d door cycles with the link up", cfg.cloudCycles)
	for k := range cfg.cloudCycles {
		door := k%cfg.doors + 1
		i := door - 1 // reservation i is on door i+1
		code, event := courierCode(i), contract.EventReopened
		if k < cfg.doors {
			code, event = depositCode(i), contract.EventStored
		}
		key := "event:" + reservationID(i) + ":" + event
		ch := events.expect(key)
		t, err := l.cycle(ctx, door, reservationID(i), code, fmt.Sprintf("cloud-cycle-%d", k), event)
		if err != nil {
			return fmt.Errorf("door cycle %d (door %d): %w", k, door, err)
		}
		m, err := events.await(ctx, key, ch)
		if err != nil {
			return fmt.Errorf("door cycle %d (door %d), at the cloud: %w", k, door, err)
		}
		var e contract.Event
		if err := json.Unmarshal(m.payload, &e); err != nil || e.EventID != t.eventID {
			return fmt.Errorf("door cycle %d: the cloud got %s; want the local event %s", k, m.payload, t.eventID)
		}
		res.closedLocal = append(res.closedLocal, t.eventAt.Sub(t.closedAt))
		res.closedCloud = append(res.closedCloud, m.at.Sub(t.closedAt))
	}
	return nil
}

// cloudOutage waits for the outbox to drain, kills the cloud broker and
// has the locker produce cfg.outage upstream messages (acks of door upserts)
// while it is down.
func cloudOutage(ctx context.Context, cfg config, cloud *mosquittoProc, p *gatewayProc, l *locker, res *cloudResult, logf func(string, ...any)) error {
	if _, err := awaitMetric(ctx, p.http, "locky_outbox_messages", waitLimit, is(0)); err != nil {
		return fmt.Errorf("the outbox did not drain with the link up: %w", err)
	}
	logf("cloud: SIGKILL to the cloud broker, then %d downstream upserts (%d acks in the outbox)", cfg.outage, cfg.outage)
	errsBefore, err := metricValue(ctx, p.http, `locky_bridge_connects_total{result="failed"}`)
	if err != nil {
		return err
	}
	if _, err := cloud.stop(syscall.SIGKILL); err != nil {
		return err
	}
	if _, err := awaitMetric(ctx, p.http, "locky_bridge_link_up", waitLimit, is(0)); err != nil {
		return err
	}
	start := time.Now()
	for i := range cfg.outage {
		if _, err := l.down(ctx, contract.EntityDoors, contract.DownMessage{MsgID: outageID(i), Op: contract.OpUpsert,
			Door: &contract.Door{ID: i%cfg.doors + 1, Size: "M"}}); err != nil {
			return fmt.Errorf("upsert %d during the outage: %w", i, err)
		}
	}
	res.produceWall = time.Since(start)
	// The gauge is refreshed once a second.
	if res.outboxBefore, err = awaitMetric(ctx, p.http, "locky_outbox_messages", waitLimit, atLeast(float64(cfg.outage))); err != nil {
		return err
	}
	errsAfter, err := metricValue(ctx, p.http, `locky_bridge_connects_total{result="failed"}`)
	if err != nil {
		return err
	}
	res.connectErrors = errsAfter - errsBefore
	return nil
}

// cloudReplay restarts the cloud broker on port, measures the replay of the
// outage at a fresh subscriber, then stops the gateway.
func cloudReplay(ctx context.Context, cfg config, sup *supervisor, cloudDir string, port int, p *gatewayProc, res *cloudResult, logf func(string, ...any)) error {
	cloudPrefix := "lockers/" + benchLocker + "/"
	logf("cloud: restarting the cloud broker on port %d; replay", port)
	rp := newReplay(cloudPrefix, cfg.outage)
	cloud, err := sup.startMosquittoOn(ctx, cfg.mosquitto, cloudDir, port, cloudConfig)
	if err != nil {
		return fmt.Errorf("cloud mosquitto restart: %w", err)
	}
	defer func() { _, _ = cloud.stop(syscall.SIGKILL) }() // the broker's end is of no interest
	rp.restarted = time.Now()
	res.restartReady = cloud.ready
	// A fresh session right after the restart: the gateway retries only when
	// its back-off (at least half a second) is over, and its retained status
	// tells if it came first.
	replaySub, err := connect(ctx, cloud.addr, "bench-cloud-replay", rp.receive, cloudPrefix+"up/#", cloudPrefix+"status")
	if err != nil {
		return err
	}
	defer disconnect(replaySub)
	rp.subscribed = time.Now()
	if res.replay, err = rp.wait(ctx); err != nil {
		return err
	}
	if res.outboxAfter, err = awaitMetric(ctx, p.http, "locky_outbox_messages", waitLimit, is(0)); err != nil {
		return fmt.Errorf("the outbox did not drain after the replay: %w", err)
	}
	if _, err := p.stop(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping the cloud-linked gateway: %w", err)
	}
	return nil
}

func outageID(i int) string { return fmt.Sprintf("outage-%d", i) }

// watchGateway returns a context that ends, with the gateway's last log
// lines as its cause, if the gateway exits.
func watchGateway(ctx context.Context, p *gatewayProc) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-p.exited:
			cancel(fmt.Errorf("the gateway exited: %w", p.exitErr()))
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// replay records, at a cloud subscriber, the upstream messages that arrive
// after the cloud broker's restart.
type replay struct {
	prefix string
	n      int
	tick   chan struct{}

	restarted, subscribed time.Time

	mu  sync.Mutex
	res replayResult
	// seen[i] is set once the ack of outage upsert i arrived.
	seen []bool
	last int // index of the last new ack
}

// replayResult is what a replay measured.
type replayResult struct {
	restarted  time.Time // the restarted broker accepted connections
	subscribed time.Time // the bench's subscriber got its SUBACK
	linkUp     time.Time // the gateway's status "online" arrived: it reconnected
	lastAt     time.Time // the last new message of the outage arrived
	distinct   int       // messages of the outage received
	duplicates int       // received again
	outOfOrder int       // new ones that arrived after a later one
	refused    int       // acks that are not ok
	other      int       // other messages on lockers/{id}/up/#
	// late is set when the gateway's status was retained on subscribing:
	// the gateway reconnected before the subscriber and messages may have
	// gone by unseen (the bench's fault, not the gateway's).
	late bool
}

func (r replayResult) lost(n int) int { return n - r.distinct }

// drain is the time from the gateway's reconnection to the last message.
func (r replayResult) drain() time.Duration { return r.lastAt.Sub(r.linkUp) }

func newReplay(prefix string, n int) *replay {
	return &replay{prefix: prefix, n: n, tick: make(chan struct{}, 1), seen: make([]bool, n), last: -1}
}

func (r *replay) receive(pr paho.PublishReceived) (bool, error) {
	now := time.Now()
	r.mu.Lock()
	switch rest := strings.TrimPrefix(pr.Packet.Topic, r.prefix); rest {
	case "status":
		var s struct {
			State string `json:"state"`
		}
		switch {
		case pr.Packet.Retain:
			r.res.late = true
		case json.Unmarshal(pr.Packet.Payload, &s) == nil && s.State == "online" && r.res.linkUp.IsZero():
			r.res.linkUp = now
		}
	case "up/acks":
		var a contract.Ack
		i := -1
		if json.Unmarshal(pr.Packet.Payload, &a) == nil {
			if s, ok := strings.CutPrefix(a.MsgID, "outage-"); ok {
				if v, err := strconv.Atoi(s); err == nil && v >= 0 && v < r.n {
					i = v
				}
			}
		}
		switch {
		case i < 0:
			r.res.other++
		case r.seen[i]:
			r.res.duplicates++
		default:
			r.seen[i] = true
			r.res.distinct++
			r.res.lastAt = now
			if i < r.last {
				r.res.outOfOrder++
			}
			r.last = i
			if !a.OK {
				r.res.refused++
			}
		}
	default:
		r.res.other++
	}
	r.mu.Unlock()
	select {
	case r.tick <- struct{}{}:
	default:
	}
	return true, nil
}

// wait waits until every message of the outage arrived; or, once the gateway
// is back, until none arrived for stallLimit (the rest are lost).
func (r *replay) wait(ctx context.Context) (replayResult, error) {
	reconnect := time.NewTimer(reconnectLimit)
	defer reconnect.Stop()
	for {
		r.mu.Lock()
		res := r.res
		r.mu.Unlock()
		res.restarted, res.subscribed = r.restarted, r.subscribed
		if res.late {
			return res, fmt.Errorf("the gateway reconnected before the bench's replay subscriber subscribed; its count would be wrong: run again")
		}
		if res.distinct == r.n {
			return res, nil
		}
		stall := time.NewTimer(stallLimit)
		if res.linkUp.IsZero() {
			stall.Stop() // waiting for the gateway's back-off, bounded by reconnectLimit
		}
		select {
		case <-r.tick:
			stall.Stop()
		case <-stall.C:
			if res.lastAt.IsZero() {
				res.lastAt = res.linkUp
			}
			return res, nil // lost: the report says how many
		case <-reconnect.C:
			stall.Stop()
			return res, fmt.Errorf("the gateway did not reconnect to the restarted cloud broker within %s", reconnectLimit)
		case <-ctx.Done():
			stall.Stop()
			return res, context.Cause(ctx)
		}
	}
}

// scrape returns the samples of the gateway's /metrics, by series (name and
// labels as written).
func scrape(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, answerLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot read the gateway's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m, err := testenv.ParseMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("the gateway's metrics: %w", err)
	}
	return m, nil
}

func metricValue(ctx context.Context, addr, series string) (float64, error) {
	m, err := scrape(ctx, addr)
	if err != nil {
		return 0, err
	}
	v, ok := m[series]
	if !ok {
		return 0, fmt.Errorf("the gateway's /metrics has no %s", series)
	}
	return v, nil
}

func is(want float64) func(float64) bool      { return func(v float64) bool { return v == want } }
func atLeast(want float64) func(float64) bool { return func(v float64) bool { return v >= want } }

// awaitMetric polls series until ok accepts its value, for at most limit.
func awaitMetric(ctx context.Context, addr, series string, limit time.Duration, ok func(float64) bool) (float64, error) {
	deadline := time.Now().Add(limit)
	for {
		v, err := metricValue(ctx, addr, series)
		if err != nil {
			return v, err
		}
		if ok(v) {
			return v, nil
		}
		if time.Now().After(deadline) {
			return v, fmt.Errorf("%s is still %v after %s", series, v, limit)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return v, err
		}
	}
}
