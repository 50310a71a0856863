package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/handlers/contract"
)

// answerLimit bounds the wait for each answer of the gateway; one that does
// not come fails the bench (something is broken, not slow).
const answerLimit = 10 * time.Second

// message is a message received by one of the bench's clients, stamped with
// the time it was received.
type message struct {
	at      time.Time
	topic   string
	payload []byte
}

// router hands each received message to the one waiting for it, by a key
// that names what it answers: "ack:<msg_id>", "command:<request_id>",
// "display:<request_id>", "event:<reservation>:<type>". Messages that nobody
// waits for are dropped.
type router struct {
	// local maps a received topic to the local topic it stands for (the
	// cloud's lockers/{id}/up/… to locky/up/…); nil means it is local.
	local func(topic string) string

	mu      sync.Mutex
	waiting map[string]chan message
}

func newRouter(local func(string) string) *router {
	return &router{local: local, waiting: map[string]chan message{}}
}

// expect registers a wait for key; register before sending the request.
func (r *router) expect(key string) chan message {
	ch := make(chan message, 1)
	r.mu.Lock()
	r.waiting[key] = ch
	r.mu.Unlock()
	return ch
}

func (r *router) await(ctx context.Context, key string, ch chan message) (message, error) {
	return r.awaitWithin(ctx, key, ch, answerLimit)
}

// awaitWithin is await with a limit of its own.
func (r *router) awaitWithin(ctx context.Context, key string, ch chan message, limit time.Duration) (message, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case m := <-ch:
		return m, nil
	case <-t.C:
		err := fmt.Errorf("no answer %s within %s", key, limit)
		r.mu.Lock()
		delete(r.waiting, key)
		r.mu.Unlock()
		return message{}, err
	case <-ctx.Done():
		return message{}, context.Cause(ctx)
	}
}

func (r *router) receive(pr paho.PublishReceived) (bool, error) {
	m := message{at: time.Now(), topic: pr.Packet.Topic, payload: bytes.Clone(pr.Packet.Payload)}
	topic := m.topic
	if r.local != nil {
		topic = r.local(topic)
	}
	key := keyOf(topic, m.payload)
	r.mu.Lock()
	ch := r.waiting[key]
	delete(r.waiting, key)
	r.mu.Unlock()
	if ch != nil {
		ch <- m
	}
	return true, nil
}

func keyOf(topic string, payload []byte) string {
	switch {
	case topic == contract.TopicAcks:
		var a contract.Ack
		if json.Unmarshal(payload, &a) == nil {
			return "ack:" + a.MsgID
		}
	case topic == contract.TopicScreenDisplay:
		var d contract.Display
		if json.Unmarshal(payload, &d) == nil {
			return "display:" + d.RequestID
		}
	case topic == contract.TopicEvents:
		var e contract.Event
		if json.Unmarshal(payload, &e) == nil {
			return "event:" + e.Reservation + ":" + e.Type
		}
	case strings.HasSuffix(topic, "/command"):
		var c contract.DoorCommand
		if json.Unmarshal(payload, &c) == nil {
			return "command:" + c.RequestID
		}
	}
	return ""
}

// connect connects an MQTT 5 client to addr, subscribed to filters with QoS 1.
func connect(ctx context.Context, addr, clientID string, onMsg func(paho.PublishReceived) (bool, error), filters ...string) (*paho.Client, error) {
	c, _, err := connectAck(ctx, addr, clientID, onMsg, filters...)
	return c, err
}

// connectAck is connect that also returns the broker's CONNACK.
func connectAck(ctx context.Context, addr, clientID string, onMsg func(paho.PublishReceived) (bool, error), filters ...string) (_ *paho.Client, _ *paho.Connack, err error) {
	ctx, cancel := context.WithTimeout(ctx, answerLimit)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot connect to the broker: %w", err)
	}
	defer func() {
		if err != nil {
			conn.Close() // the error returned says what went wrong
		}
	}()
	c := paho.NewClient(paho.ClientConfig{Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){onMsg}})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: MQTT connect to %s: %w", clientID, addr, err)
	}
	if ca.ReasonCode != 0 {
		return nil, nil, fmt.Errorf("%s: broker %s refused the connection: reason %d", clientID, addr, ca.ReasonCode)
	}
	if len(filters) == 0 {
		return c, ca, nil
	}
	subs := make([]paho.SubscribeOptions, len(filters))
	for i, f := range filters {
		subs[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: subscribe: %w", clientID, err)
	}
	for i, rc := range sa.Reasons {
		if rc >= 0x80 {
			return nil, nil, fmt.Errorf("%s: subscribe %s refused: reason %d", clientID, filters[i], rc)
		}
	}
	return c, ca, nil
}

// publish publishes v as JSON with QoS 1 and waits for the broker's PUBACK.
func publish(ctx context.Context, c *paho.Client, topic string, v any, retain bool) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("cannot encode a message for %s: %w", topic, err)
	}
	ctx, cancel := context.WithTimeout(ctx, answerLimit)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: payload}); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// locker is the gateway as the outside sees it, through three MQTT clients
// as in a real locker: the back-end (through the bridge), the touchscreen
// and the door board.
type locker struct {
	r                      *router
	backend, screen, doors *paho.Client
}

func connectLocker(ctx context.Context, addr string) (*locker, error) {
	l := &locker{r: newRouter(nil)}
	var err error
	if l.backend, err = connect(ctx, addr, "bench-backend", l.r.receive, contract.TopicAcks, contract.TopicEvents); err != nil {
		return nil, err
	}
	if l.screen, err = connect(ctx, addr, "bench-screen", l.r.receive, contract.TopicScreenDisplay); err != nil {
		l.close()
		return nil, err
	}
	if l.doors, err = connect(ctx, addr, "bench-doors", l.r.receive, contract.TopicDoorCommands); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// close disconnects the clients. The gateway may be gone already, so a
// failed DISCONNECT is of no interest.
func (l *locker) close() {
	for _, c := range []*paho.Client{l.backend, l.screen, l.doors} {
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
	}
}

// down publishes a downstream message and returns the time until its ack,
// which must be ok.
func (l *locker) down(ctx context.Context, entity string, m contract.DownMessage) (time.Duration, error) {
	key := "ack:" + m.MsgID
	ch := l.r.expect(key)
	t0 := time.Now()
	if err := publish(ctx, l.backend, contract.TopicDownPrefix+entity, m, false); err != nil {
		return 0, err
	}
	ack, err := l.r.await(ctx, key, ch)
	if err != nil {
		return 0, err
	}
	var a contract.Ack
	if err := json.Unmarshal(ack.payload, &a); err != nil {
		return 0, fmt.Errorf("ack of %s does not decode: %w", m.MsgID, err)
	}
	if !a.OK {
		return 0, fmt.Errorf("%s %s rejected: %s", entity, m.MsgID, a.Error)
	}
	return ack.at.Sub(t0), nil
}

// createDoors creates doors 1..n and returns the upsert → ack time of the
// first, the gateway's first downstream message since its start.
func (l *locker) createDoors(ctx context.Context, n int) (first time.Duration, err error) {
	for d := 1; d <= n; d++ {
		took, err := l.down(ctx, contract.EntityDoors, contract.DownMessage{MsgID: fmt.Sprintf("door-%d", d),
			Op: contract.OpUpsert, Door: &contract.Door{ID: d, Size: "M"}})
		if err != nil {
			return 0, err
		}
		if d == 1 {
			first = took
		}
	}
	return first, nil
}

// Reservation i (0-based) is on door i%doors+1 and has these codes.
func reservationID(i int) string { return fmt.Sprintf("R%d", i) }
func depositCode(i int) string   { return fmt.Sprintf("1%07d", i) }
func pickupCode(i int) string    { return fmt.Sprintf("2%07d", i) }
func courierCode(i int) string   { return fmt.Sprintf("3%07d", i) }

// arrivingOn returns the arriving reservation of door: the one of the last
// doors reservations that is on it.
func arrivingOn(door, n, doors int) int {
	first := n - doors
	return first + (door-1-first%doors+doors)%doors
}

// upsertReservations upserts n reservations one at a time: n-doors cancelled
// ones (history that stays in the database), then one arriving per door. It
// returns each upsert → ack time and the wall time of the whole run.
func (l *locker) upsertReservations(ctx context.Context, n, doors int) (sample, time.Duration, error) {
	lat := make(sample, 0, n)
	start := time.Now()
	for i := range n {
		status := contract.StatusCancelled
		if i >= n-doors {
			status = contract.StatusArriving
		}
		d, err := l.down(ctx, contract.EntityReservations, contract.DownMessage{MsgID: fmt.Sprintf("res-%d", i),
			Op: contract.OpUpsert, Reservation: &contract.Reservation{ID: reservationID(i), Version: 1,
				Door: i%doors + 1, Status: status, DepositCode: depositCode(i), PickupCode: pickupCode(i),
				CourierCode: courierCode(i)}})
		if err != nil {
			return nil, 0, err
		}
		lat = append(lat, d)
	}
	return lat, time.Since(start), nil
}

// cycleTimes are the times of one door cycle from the code's publish.
type cycleTimes struct {
	command time.Duration // the open command reached the door board
	opened  time.Duration // "opened" reached the screen (after the door reported open)
	done    time.Duration // the status event reached the back-end (after the door reported closed)

	closedAt time.Time // before the door board's publish of "closed"
	eventAt  time.Time // the status event reached the back-end
	eventID  string    // of the status event
}

// cycle runs one door cycle as the touchscreen and the door board would: the
// code, the open command, the door reports open, the display says opened, the
// door reports closed, the event goes upstream.
func (l *locker) cycle(ctx context.Context, door int, reservation, code, requestID, event string) (cycleTimes, error) {
	cmdKey, dispKey := "command:"+requestID, "display:"+requestID
	evKey := "event:" + reservation + ":" + event
	cmdCh, dispCh, evCh := l.r.expect(cmdKey), l.r.expect(dispKey), l.r.expect(evKey)
	t0 := time.Now()
	if err := publish(ctx, l.screen, contract.TopicScreenCode, contract.CodeRequest{Code: code, RequestID: requestID}, false); err != nil {
		return cycleTimes{}, err
	}
	cmd, err := l.r.await(ctx, cmdKey, cmdCh)
	if err != nil {
		return cycleTimes{}, err
	}
	if want := contract.DoorCommandTopic(door); cmd.topic != want {
		return cycleTimes{}, fmt.Errorf("%s: command on %s; want %s", requestID, cmd.topic, want)
	}
	if err := publish(ctx, l.doors, contract.DoorStateTopic(door), contract.DoorState{State: contract.DoorOpen, At: time.Now().UTC()}, true); err != nil {
		return cycleTimes{}, err
	}
	disp, err := l.r.await(ctx, dispKey, dispCh)
	if err != nil {
		return cycleTimes{}, err
	}
	var d contract.Display
	if err := json.Unmarshal(disp.payload, &d); err != nil || d.Result != contract.ResultOpened {
		return cycleTimes{}, fmt.Errorf("%s: display %s; want result %q", requestID, disp.payload, contract.ResultOpened)
	}
	closedAt := time.Now()
	if err := publish(ctx, l.doors, contract.DoorStateTopic(door), contract.DoorState{State: contract.DoorClosed, At: closedAt.UTC()}, true); err != nil {
		return cycleTimes{}, err
	}
	ev, err := l.r.await(ctx, evKey, evCh)
	if err != nil {
		return cycleTimes{}, err
	}
	var e contract.Event
	if err := json.Unmarshal(ev.payload, &e); err != nil {
		return cycleTimes{}, fmt.Errorf("%s: event %s does not decode: %w", requestID, ev.payload, err)
	}
	return cycleTimes{command: cmd.at.Sub(t0), opened: disp.at.Sub(t0), done: ev.at.Sub(t0),
		closedAt: closedAt, eventAt: ev.at, eventID: e.EventID}, nil
}

// cycleRun is the outcome of runCycles.
type cycleRun struct {
	command, opened, done sample
}

// runCycles runs cfg.cycles door cycles over the arriving reservations: the
// first cycle of each door deposits the parcel (reservation.stored), the
// following ones are courier reopenings (reservation.reopened). Cycle k is on
// door k%doors+1; cfg.cycleWorkers workers run them, each on its own doors.
func (l *locker) runCycles(ctx context.Context, cfg config) (cycleRun, time.Duration, error) {
	results := make([]cycleTimes, cfg.cycles)
	errs := make(chan error, cfg.cycleWorkers)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	for w := range cfg.cycleWorkers {
		go func() {
			for k := w; k < cfg.cycles; k += cfg.cycleWorkers {
				door := k%cfg.doors + 1
				i := arrivingOn(door, cfg.reservations, cfg.doors)
				code, event := courierCode(i), contract.EventReopened
				if k < cfg.doors {
					code, event = depositCode(i), contract.EventStored
				}
				t, err := l.cycle(ctx, door, reservationID(i), code, fmt.Sprintf("cycle-%d", k), event)
				if err != nil {
					err = fmt.Errorf("door cycle %d (door %d): %w", k, door, err)
					cancel(err)
					errs <- err
					return
				}
				results[k] = t
			}
			errs <- nil
		}()
	}
	var first error
	for range cfg.cycleWorkers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	wall := time.Since(start)
	if first != nil {
		return cycleRun{}, 0, first
	}
	var run cycleRun
	for _, t := range results {
		run.command = append(run.command, t.command)
		run.opened = append(run.opened, t.opened)
		run.done = append(run.done, t.done)
	}
	return run, wall, nil
}
