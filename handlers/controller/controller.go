// Package controller is the locker workflow (SPEC §5): it turns a code on the
// touchscreen into a door opening, a door closing into a status change and its
// upstream event, and watches doors for faults, forced openings and doors left
// open. It talks to the rest of the locker only through broker topics.
//
// All workflow state lives on one goroutine (Run); broker callbacks and timers
// hand their work to it, so door cycles of different doors interleave without
// locks and a second code for a door in a cycle gets busy.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/store"
	"github.com/locky-edge/locky/handlers/contract"
)

// Broker is what the controller needs of the local broker.
type Broker interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	// PublishResponse answers an MQTT 5 request on its response topic with its
	// correlation data.
	PublishResponse(topic string, correlation, payload []byte) error
}

// Store is what the controller needs of the store.
type Store interface {
	LookupCode(code string) (*store.Reservation, string, error)
	Door(id int) (contract.Door, bool, error)
	DoorOpened(now time.Time, c store.Cycle, ev *contract.Event) ([]store.Message, error)
	CloseCycle(now time.Time, door int, decide func(store.Cycle, *store.Reservation) store.Transition) (*store.Cycle, []store.Message, error)
	Cycles() ([]store.Cycle, error)
	AppendEvent(now time.Time, ev contract.Event, a *store.AuditRecord) (contract.Event, []store.Message, error)
	RemoteOpen(now time.Time, msgID string, door int, reason string) (bool, error)
	SaveLockout(store.Lockout) error
	Lockout() (store.Lockout, error)
	LastCycle(door int) (*store.Cycle, error)
	Ack(now time.Time, msgID string, err error) ([]store.Message, error)
}

// Config configures a Controller. The zero value of each duration means its
// default from SPEC §5.
type Config struct {
	Store  Store  // required
	Broker Broker // required
	// Metrics receives the workflow metrics. Nil means a private set.
	Metrics *metrics.Set
	Logger  *slog.Logger // nil means slog.Default()

	Grace            time.Duration // a used code stays valid this long; 10 min
	DoorTimeout      time.Duration // a commanded door must report open within this; 5 s
	LeftOpenAfter    time.Duration // a door open longer raises door.left_open; 2 min
	LockoutThreshold int           // invalid codes within LockoutWindow that lock the screen; 5
	LockoutWindow    time.Duration // 5 min
	LockoutBase      time.Duration // first lockout; doubles each time; 1 min
	LockoutMax       time.Duration // longest lockout; 1 h
	// LockoutResetAfter is the quiet time (no wrong code, after the last
	// lockout ended) that starts the doubling again; 24 h.
	LockoutResetAfter time.Duration
}

// Defaults fills the zero fields of c with SPEC §5's values.
func (c *Config) Defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.Grace, 10*time.Minute)
	set(&c.DoorTimeout, 5*time.Second)
	set(&c.LeftOpenAfter, 2*time.Minute)
	set(&c.LockoutWindow, 5*time.Minute)
	set(&c.LockoutBase, time.Minute)
	set(&c.LockoutMax, time.Hour)
	set(&c.LockoutResetAfter, 24*time.Hour)
	if c.LockoutThreshold == 0 {
		c.LockoutThreshold = 5
	}
}

// Reply says where the answer to a code request goes: always the display
// topic, and the MQTT 5 response topic when the request named one.
type Reply struct {
	ResponseTopic string
	Correlation   []byte
}

type phase int

const (
	awaitingOpen phase = iota
	isOpen
)

// cycle is a door cycle in memory.
type cycle struct {
	store.Cycle
	phase    phase
	reply    *Reply // nil for support openings and restored cycles
	msgID    string
	started  time.Time // monotonic, for the code-to-open latency
	timer    *time.Timer
	leftOpen bool
}

// Controller runs the workflow. Create it with New, start it with Run.
type Controller struct {
	cfg Config
	log *slog.Logger
	m   *workflowMetrics

	work chan func()
	mu   sync.Mutex // guards stop and shut
	stop context.CancelFunc
	shut bool
	done chan struct{} // closed when Run returns

	// owned by the Run goroutine
	cycles map[int]*cycle
	forced map[int]bool
	lock   lockout
}

// New validates cfg and returns a Controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Store == nil || cfg.Broker == nil {
		return nil, errors.New("controller: Store and Broker are required")
	}
	cfg.Defaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	c := &Controller{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "controller"),
		m:      newWorkflowMetrics(cfg.Metrics),
		work:   make(chan func(), 1024),
		done:   make(chan struct{}),
		cycles: map[int]*cycle{},
		forced: map[int]bool{},
		lock: lockout{threshold: cfg.LockoutThreshold, window: cfg.LockoutWindow,
			base: cfg.LockoutBase, max: cfg.LockoutMax, resetAfter: cfg.LockoutResetAfter},
	}
	return c, nil
}

// Run restores the door cycles that were open when the gateway last stopped
// and processes work until ctx ends or Close is called.
func (c *Controller) Run(ctx context.Context) error {
	cycles, err := c.cfg.Store.Cycles()
	if err != nil {
		return fmt.Errorf("controller: cannot restore open door cycles: %w", err)
	}
	now := time.Now()
	if l, err := c.cfg.Store.Lockout(); err != nil {
		return fmt.Errorf("controller: cannot read the lockout state: %w", err)
	} else if left := c.lock.restore(l, now); left > 0 {
		c.log.Info("the screen is still locked out from before the restart", "retry_after_s", seconds(left))
	}
	for _, sc := range cycles {
		cy := &cycle{Cycle: sc, phase: isOpen, started: now}
		open := now.Sub(sc.OpenedAt)
		if open < 0 {
			open = 0 // the wall clock went back across the restart
		}
		c.armLeftOpen(cy, c.cfg.LeftOpenAfter-open)
		c.cycles[sc.Door] = cy
		c.log.Info("restored a door cycle that was open at the last stop", "door", sc.Door, "reservation", sc.Reservation, "kind", sc.Kind)
	}
	c.mu.Lock()
	if c.shut {
		c.mu.Unlock()
		return nil
	}
	ctx, c.stop = context.WithCancel(ctx)
	c.mu.Unlock()
	defer close(c.done)
	for {
		select {
		case <-ctx.Done():
			for _, cy := range c.cycles {
				if cy.timer != nil {
					cy.timer.Stop()
				}
			}
			return nil
		case fn := <-c.work:
			fn()
		}
	}
}

// Close stops Run and waits for it. Open door cycles stay persisted and are
// completed by the next start. It is safe to call more than once.
func (c *Controller) Close() error {
	c.mu.Lock()
	stop := c.stop
	c.shut = true
	c.mu.Unlock()
	if stop != nil {
		stop()
		<-c.done
	}
	return nil
}

// do hands fn to the Run goroutine. It reports false once the controller has stopped.
func (c *Controller) do(fn func()) bool {
	select {
	case c.work <- fn:
		return true
	case <-c.done:
		return false
	}
}

// HandleCode handles a payload of locky/screen/code.
func (c *Controller) HandleCode(payload []byte, reply *Reply) {
	received := time.Now()
	if reply == nil {
		reply = &Reply{}
	}
	if reply.ResponseTopic != "" {
		if err := contract.CheckResponseTopic(reply.ResponseTopic); err != nil {
			c.log.Warn("ignored the MQTT 5 response topic of a code request", "err", err)
			reply = &Reply{} // the answer still goes to the display topic
		}
	}
	req, err := contract.DecodeCodeRequest(payload)
	if err != nil {
		c.m.attempt(contract.ResultBadRequest)
		c.display(reply, contract.Display{RequestID: contract.RequestIDOf(payload), Result: contract.ResultBadRequest,
			Message: err.Error()})
		return
	}
	if !c.do(func() { c.code(req, reply, received) }) {
		c.display(reply, contract.Display{RequestID: req.RequestID, Result: contract.ResultBusy,
			Message: "The locker is restarting; try again in a moment"})
	}
}

func (c *Controller) code(req contract.CodeRequest, reply *Reply, received time.Time) {
	now := time.Now()
	answer := func(d contract.Display) {
		d.RequestID = req.RequestID
		c.m.attempt(d.Result)
		c.display(reply, d)
	}
	if left := c.lock.locked(now); left > 0 {
		answer(lockedOut(left))
		return
	}
	r, kind, err := c.cfg.Store.LookupCode(req.Code)
	if err != nil {
		c.log.Error("code lookup failed; the store may be damaged", "err", err)
		answer(contract.Display{Result: contract.ResultDoorFault, Message: "The locker cannot check codes right now; please contact support"})
		return
	}
	verdict := Refuse
	if r != nil {
		var last *store.Cycle
		if code := r.Codes[kind]; code != nil && !code.UsedAt.IsZero() {
			if last, err = c.cfg.Store.LastCycle(r.Door); err != nil {
				c.log.Error("cannot read the door's last cycle; a used code is refused", "door", r.Door, "err", err)
			}
		}
		verdict = Judge(r, kind, now, c.cfg.Grace, last)
	}
	switch verdict {
	case Refuse:
		d := c.lock.fail(now)
		if err := c.cfg.Store.SaveLockout(c.lock.state()); err != nil {
			c.log.Error("cannot persist the lockout state; a restart would give a guesser fresh attempts", "err", err)
		}
		if d > 0 {
			c.event(contract.Event{Type: contract.EventLockout, RetryAfterS: seconds(d)}, nil)
			c.m.lockouts.Inc()
			answer(lockedOut(d))
			return
		}
		answer(contract.Display{Result: contract.ResultInvalidCode, Message: "This code is not valid"})
		return
	case Expired:
		answer(contract.Display{Result: contract.ResultExpired, Door: r.Door,
			Message: "This code has expired; the parcel goes back to the sender"})
		return
	}
	if c.cycles[r.Door] != nil {
		answer(contract.Display{Result: contract.ResultBusy, Door: r.Door,
			Message: fmt.Sprintf("Door %d is in use; try again in a moment", r.Door)})
		return
	}
	cy := &cycle{Cycle: store.Cycle{Door: r.Door, Reservation: r.ID, Kind: kind, RequestID: req.RequestID},
		reply: reply, started: received}
	c.command(cy)
}

// command sends the open command for a new cycle and arms the door timeout.
func (c *Controller) command(cy *cycle) {
	c.cycles[cy.Door] = cy
	delete(c.forced, cy.Door)
	payload, _ := json.Marshal(contract.DoorCommand{Action: "open", RequestID: cy.RequestID})
	if err := c.cfg.Broker.Publish(contract.DoorCommandTopic(cy.Door), payload, false, 1); err != nil {
		c.log.Error("cannot publish a door command", "door", cy.Door, "err", err)
	}
	if cy.reply != nil {
		c.m.codeToCommand.UpdateDuration(cy.started)
	}
	cy.timer = c.after(c.cfg.DoorTimeout, cy, func() {
		if cy.phase == awaitingOpen {
			c.fault(cy, fmt.Sprintf("door %d did not report open within %s", cy.Door, c.cfg.DoorTimeout))
		}
	})
}

// after runs fn on the Run goroutine after d, if cy is still the door's cycle.
func (c *Controller) after(d time.Duration, cy *cycle, fn func()) *time.Timer {
	return time.AfterFunc(d, func() {
		c.do(func() {
			if c.cycles[cy.Door] == cy {
				fn()
			}
		})
	})
}

// fault ends a cycle whose door did not open: the code is not consumed.
func (c *Controller) fault(cy *cycle, reason string) {
	delete(c.cycles, cy.Door)
	if cy.timer != nil {
		cy.timer.Stop()
	}
	c.m.faults.Inc()
	c.log.Warn("door fault", "door", cy.Door, "reason", reason)
	c.event(contract.Event{Type: contract.EventDoorFault, Door: cy.Door, Reservation: cy.Reservation, Reason: reason},
		&store.AuditRecord{At: time.Now().UTC(), Door: cy.Door, Reservation: cy.Reservation, Kind: cy.Kind,
			Result: contract.ResultDoorFault, Reason: reason, RequestID: cy.RequestID})
	if cy.reply != nil {
		c.m.attempt(contract.ResultDoorFault)
		c.display(cy.reply, contract.Display{RequestID: cy.RequestID, Result: contract.ResultDoorFault, Door: cy.Door,
			Message: fmt.Sprintf("Door %d did not open; your code is still valid. Please try again or contact support", cy.Door)})
	}
}

// HandleDoorState handles a payload of locky/doors/{door}/state.
func (c *Controller) HandleDoorState(door int, payload []byte) {
	st, err := contract.DecodeDoorState(payload)
	if err != nil {
		c.log.Warn("ignored a door state that does not decode", "door", door, "err", err)
		return
	}
	c.do(func() { c.doorState(door, st) })
}

func (c *Controller) doorState(door int, st contract.DoorState) {
	cy := c.cycles[door]
	switch st.State {
	case contract.DoorOpen:
		switch {
		case cy != nil && cy.phase == awaitingOpen:
			c.opened(cy)
		case cy == nil && !c.forced[door]:
			c.forced[door] = true
			c.m.forced.Inc()
			c.log.Warn("door opened with no command in flight", "door", door)
			c.event(contract.Event{Type: contract.EventForcedOpen, Door: door},
				&store.AuditRecord{At: time.Now().UTC(), Door: door, Kind: "none", Result: "forced_open"})
		}
	case contract.DoorClosed:
		delete(c.forced, door)
		if cy != nil && cy.phase == isOpen {
			c.closed(cy)
		}
	case contract.DoorFault:
		if cy != nil && cy.phase == awaitingOpen {
			c.fault(cy, "door reported fault: "+st.Reason)
			return
		}
		c.m.faults.Inc()
		c.event(contract.Event{Type: contract.EventDoorFault, Door: door, Reason: st.Reason}, nil)
	}
}

func (c *Controller) opened(cy *cycle) {
	cy.phase = isOpen
	if cy.timer != nil {
		cy.timer.Stop()
	}
	cy.OpenedAt = time.Now().UTC()
	if _, err := c.cfg.Store.DoorOpened(cy.OpenedAt, cy.Cycle, nil); err != nil {
		// The door is open; the close still completes the cycle in memory, but a
		// restart before it would forget the cycle. Say so loudly.
		c.log.Error("cannot persist an open door cycle; a restart before it closes would lose it", "door", cy.Door, "err", err)
	}
	c.m.cycles.Inc()
	c.armLeftOpen(cy, c.cfg.LeftOpenAfter)
	if cy.reply != nil { // a code opened it (not support, not a restored cycle)
		c.m.codeToOpen.UpdateDuration(cy.started)
		c.m.attempt(contract.ResultOpened)
		c.display(cy.reply, contract.Display{RequestID: cy.RequestID, Result: contract.ResultOpened, Door: cy.Door,
			Message: fmt.Sprintf("Door %d is open — please close it when done", cy.Door)})
	}
}

func (c *Controller) armLeftOpen(cy *cycle, d time.Duration) {
	if d < 0 {
		d = 0
	}
	cy.timer = c.after(d, cy, func() {
		if cy.phase == isOpen && !cy.leftOpen {
			cy.leftOpen = true
			c.m.leftOpen.Inc()
			c.event(contract.Event{Type: contract.EventLeftOpen, Door: cy.Door, Reservation: cy.Reservation}, nil)
		}
	})
}

func (c *Controller) closed(cy *cycle) {
	if cy.timer != nil {
		cy.timer.Stop()
	}
	now := time.Now()
	decide := func(sc store.Cycle, r *store.Reservation) store.Transition { return Close(sc, r, now) }
	done, _, err := c.cfg.Store.CloseCycle(now, cy.Door, decide)
	if err == nil && done == nil {
		// The opening was never persisted (the store failed then): persist
		// it now, so that the closing still changes the status with its event.
		if _, err = c.cfg.Store.DoorOpened(cy.OpenedAt, cy.Cycle, nil); err == nil {
			_, _, err = c.cfg.Store.CloseCycle(now, cy.Door, decide)
		}
	}
	if err != nil {
		// Keep the cycle: the store still has it, and the next closed report
		// (or the next start) completes it.
		c.log.Error("cannot commit a door closing; it is retried on the next report of the door", "door", cy.Door, "err", err)
		return
	}
	delete(c.cycles, cy.Door)
}

// HandleCommand handles a payload of locky/down/commands (support opens a door).
// It returns once the command's ack is committed.
func (c *Controller) HandleCommand(payload []byte) error {
	cmd, err := contract.DecodeCommand(payload)
	if err != nil {
		_, aerr := c.cfg.Store.Ack(time.Now(), contract.MsgIDOf(payload), err)
		return aerr
	}
	res := make(chan error, 1)
	if !c.do(func() { res <- c.remoteOpen(cmd) }) {
		return errors.New("controller stopped before the command was handled")
	}
	select {
	case err := <-res:
		return err
	case <-c.done:
		return errors.New("controller stopped before the command was handled")
	}
}

func (c *Controller) remoteOpen(cmd contract.Command) error {
	now := time.Now()
	if cy := c.cycles[cmd.Door]; cy != nil {
		_, err := c.cfg.Store.Ack(now, cmd.MsgID, fmt.Errorf("door %d is in a door cycle; try again once it is closed", cmd.Door))
		return err
	}
	accepted, err := c.cfg.Store.RemoteOpen(now, cmd.MsgID, cmd.Door, cmd.Reason)
	if err != nil || !accepted {
		return err
	}
	c.command(&cycle{Cycle: store.Cycle{Door: cmd.Door, Kind: store.KindSupport, RequestID: cmd.MsgID}, started: now, msgID: cmd.MsgID})
	return nil
}

func (c *Controller) event(ev contract.Event, a *store.AuditRecord) {
	if _, _, err := c.cfg.Store.AppendEvent(time.Now(), ev, a); err != nil {
		c.log.Error("cannot commit an event", "type", ev.Type, "door", ev.Door, "err", err)
	}
}

func (c *Controller) display(reply *Reply, d contract.Display) {
	payload, err := json.Marshal(d)
	if err != nil {
		c.log.Error("cannot encode a display message", "err", err)
		return
	}
	if err := c.cfg.Broker.Publish(contract.TopicScreenDisplay, payload, false, 1); err != nil {
		c.log.Error("cannot publish to the display", "err", err)
	}
	if reply != nil && reply.ResponseTopic != "" {
		if err := c.cfg.Broker.PublishResponse(reply.ResponseTopic, reply.Correlation, payload); err != nil {
			c.log.Warn("cannot publish the MQTT 5 response", "topic", reply.ResponseTopic, "err", err)
		}
	}
}

func lockedOut(d time.Duration) contract.Display {
	s := seconds(d)
	return contract.Display{Result: contract.ResultLockedOut, RetryAfterS: s,
		Message: fmt.Sprintf("Too many attempts, try again in %d s", s)}
}

func seconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
