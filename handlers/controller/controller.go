// Package controller is the locker workflow (SPEC §5): it turns a code on the
// touchscreen into a door opening, a door closing into a status change and its
// upstream event, and watches doors for faults, forced openings and doors left
// open.
//
// It subscribes to locky/screen/code (codes), locky/doors/+/state (door
// states) and locky/down/commands (support opens a door), and publishes on
// locky/screen/display and locky/doors/{n}/command; what it commits goes
// upstream through the store's outbox. Its place in the layering: a handler,
// on the store and the contract; it calls no other handler.
//
// All workflow state lives on one goroutine (started by Start); broker callbacks and timers
// hand their work to it, so door cycles of different doors interleave without
// locks and a second code for a door in a cycle gets busy.
//
// A write the store fails to commit (a full disk) is held on that goroutine
// and retried with back-off by a timer, and before any later write, until
// it commits: a door closing, an event, the lockout state, an ack. Nothing
// waits on it but the door it concerns: a closed door whose closing is not
// committed yet answers busy to its codes meanwhile.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// Broker is what the controller needs of the local broker.
type Broker interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	// PublishResponse answers an MQTT 5 request on its response topic with its
	// correlation data.
	PublishResponse(topic string, correlation, payload []byte) error
	// Subscribe calls fn for each message on filter, on the publisher's
	// goroutine; Handle does too, and answers the publisher with fn's error.
	Subscribe(filter string, fn func(contract.Message)) error
	Handle(filter string, fn func(contract.Message) error) error
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
	// SetPending says how many writes the controller holds for retry.
	SetPending(owner string, n int)
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
	// RetryBase is the first wait before a write that failed to commit is
	// tried again; it doubles up to RetryMax. 250 ms and 5 s.
	RetryBase, RetryMax time.Duration
	// StopWait is the longest Quiesce waits for the doors commanded to
	// report open; 3 s, so that a graceful stop still ends within SPEC §3's
	// 5 s with the outbox flushed.
	StopWait time.Duration
}

// Defaults fills the zero fields of c with SPEC §5's values.
func (c *Config) Defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.Grace, contract.DefaultGrace)
	set(&c.DoorTimeout, 5*time.Second)
	set(&c.LeftOpenAfter, 2*time.Minute)
	set(&c.LockoutWindow, 5*time.Minute)
	set(&c.LockoutBase, time.Minute)
	set(&c.LockoutMax, time.Hour)
	set(&c.LockoutResetAfter, 24*time.Hour)
	set(&c.RetryBase, 250*time.Millisecond)
	set(&c.RetryMax, 5*time.Second)
	set(&c.StopWait, 3*time.Second)
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
	// closing: the door reported closed and its closing is not committed
	// yet (the store fails); a retry commits it.
	closing
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
	// persisted: the store holds the cycle (its opening committed, or it
	// was restored from the store).
	persisted bool
	closedAt  time.Time // when the door reported closed
}

// pendingWrite is a write that failed to commit, held for retry.
type pendingWrite struct {
	what string
	door int          // 0 when it is not about a door
	try  func() error // commits it; runs on the work goroutine
}

// Controller runs the workflow. Create it with New, start it with Start, stop it with Close.
type Controller struct {
	cfg Config
	log *slog.Logger
	m   *workflowMetrics

	work chan job
	mu   sync.Mutex // guards stop and shut
	stop context.CancelFunc
	shut bool
	done chan struct{} // closed when the work goroutine returns (or by Close when never started)

	// owned by the work goroutine
	cycles map[int]*cycle
	forced map[int]bool
	// occupied is what each door's occupancy sensor said last; absent or
	// nil where the door has none (or it was not read).
	occupied map[int]*bool
	lock     lockout

	pending        []*pendingWrite
	retryTimer     *time.Timer
	retryDelay     time.Duration
	lockoutPending bool // a pendingWrite saves the lockout state

	// quiescing: Quiesce was called; no door is commanded any more.
	quiescing bool
	// idle is closed, and set to nil, once no door commanded awaits its
	// open any more; nil when Quiesce is not waiting.
	idle chan struct{}
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
		cfg:      cfg,
		log:      cfg.Logger.With("component", "controller"),
		m:        newWorkflowMetrics(cfg.Metrics),
		work:     make(chan job, 1024),
		done:     make(chan struct{}),
		cycles:   map[int]*cycle{},
		forced:   map[int]bool{},
		occupied: map[int]*bool{},
		lock: lockout{threshold: cfg.LockoutThreshold, window: cfg.LockoutWindow,
			base: cfg.LockoutBase, max: cfg.LockoutMax, resetAfter: cfg.LockoutResetAfter},
	}
	return c, nil
}

// Start restores the door cycles that were open when the gateway last
// stopped and the screen lockout, subscribes to the controller's topics and
// starts the goroutine that does the work, until ctx ends or Close is called.
// A database it cannot restore from is an error, before anything is
// subscribed. Messages that arrive before Start returns wait for the work
// goroutine.
func (c *Controller) Start(ctx context.Context) error {
	if err := c.restore(); err != nil {
		return err
	}
	subs := []struct {
		filter string
		fn     func(contract.Message)
	}{
		{contract.TopicScreenCode, func(m contract.Message) {
			var reply *Reply
			if m.ResponseTopic != "" {
				reply = &Reply{ResponseTopic: m.ResponseTopic, Correlation: m.Correlation}
			}
			c.HandleCode(m.Payload, reply)
		}},
		{contract.TopicDoorStates, func(m contract.Message) {
			if d, err := contract.DoorFromTopic(m.Topic, "state"); err == nil {
				c.HandleDoorState(d, m.Payload)
			}
		}},
	}
	for _, sub := range subs {
		if err := c.cfg.Broker.Subscribe(sub.filter, sub.fn); err != nil {
			return fmt.Errorf("controller: cannot subscribe to %s: %w", sub.filter, err)
		}
	}
	err := c.cfg.Broker.Handle(contract.TopicDownCommands, func(m contract.Message) error { return c.HandleCommand(m.Payload) })
	if err != nil {
		return fmt.Errorf("controller: cannot subscribe to %s: %w", contract.TopicDownCommands, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return errors.New("controller: Start after Close")
	}
	ctx, c.stop = context.WithCancel(ctx)
	go c.run(ctx)
	return nil
}

// RestoreError is Start's error when the state of the last run cannot be
// read back: the database is damaged.
type RestoreError struct {
	What string // "the open door cycles", "the screen lockout"
	Err  error
}

func (e *RestoreError) Error() string { return "cannot restore " + e.What + ": " + e.Err.Error() }
func (e *RestoreError) Unwrap() error { return e.Err }

// restore reads back the open door cycles and the lockout.
func (c *Controller) restore() error {
	cycles, err := c.cfg.Store.Cycles()
	if err != nil {
		return &RestoreError{"the open door cycles", err}
	}
	now := time.Now()
	if l, err := c.cfg.Store.Lockout(); err != nil {
		return &RestoreError{"the screen lockout", err}
	} else if left := c.lock.restore(l, now); left > 0 {
		c.log.Info("the screen is still locked out from before the restart", "retry_after_s", seconds(left))
	}
	for _, sc := range cycles {
		cy := &cycle{Cycle: sc, phase: isOpen, started: now, persisted: true}
		open := now.Sub(sc.OpenedAt)
		if open < 0 {
			open = 0 // the wall clock went back across the restart
		}
		c.armLeftOpen(cy, c.cfg.LeftOpenAfter-open)
		c.cycles[sc.Door] = cy
		c.log.Info("restored a door cycle that was open at the last stop", "door", sc.Door, "reservation", sc.Reservation, "kind", sc.Kind)
	}
	return nil
}

// run does the work handed to it until ctx ends.
func (c *Controller) run(ctx context.Context) {
	defer close(c.done)
	for {
		select {
		case <-ctx.Done():
			c.drain()
			for _, cy := range c.cycles {
				if cy.timer != nil {
					cy.timer.Stop()
				}
			}
			if c.retryTimer != nil {
				c.retryTimer.Stop()
			}
			if len(c.pending) > 0 {
				// Door closings stay in the store's open cycles and are
				// completed after the restart; the rest is lost.
				c.log.Error("stopping with writes the store could not commit; an open door cycle is completed after the restart, events and acks among them are lost",
					"pending", len(c.pending), "first", c.pending[0].what)
			}
			return
		case j := <-c.work:
			j.fn()
			if c.idle != nil {
				c.checkIdle()
			}
		}
	}
}

// Quiesce stops the controller from commanding doors, for a graceful stop
// while the broker is up: a code is answered busy (the locker restarts), a
// support command is refused with an error but not acknowledged (the bridge
// delivers it again after the restart). It returns once every door already
// commanded has reported open (its cycle is then persisted, as always) or
// timed out (door_fault), and within StopWait at the most, the wait for the
// work queued before it included. A door still awaited then gets its
// door_fault at once, its code not consumed: support learns of it, and a
// door that opens later without being seen is not recorded. Codes and door
// states are still handled after it; Close stops the rest.
func (c *Controller) Quiesce() error {
	c.mu.Lock()
	started := c.stop != nil
	c.mu.Unlock()
	if !started {
		return nil // it never ran: no door was commanded
	}
	limit := time.NewTimer(c.cfg.StopWait)
	defer limit.Stop()
	awaited := make(chan []int, 1)
	idle := make(chan struct{})
	// Queued from a goroutine of its own: the queue may be full, and the
	// stop's wait counts from now.
	go c.do(func() {
		c.quiescing, c.idle = true, idle
		awaited <- c.awaitedDoors()
		c.checkIdle()
	})
	var doors []int
	select {
	case doors = <-awaited:
	case <-c.done:
		return nil
	case <-limit.C:
		c.log.Warn("stopping: the controller's work did not come to the stop within the stop's wait; the stop goes on", "stop_wait", c.cfg.StopWait)
		return nil
	}
	if len(doors) == 0 {
		return nil
	}
	c.log.Info("stopping: no new door command; awaiting the doors commanded (open, or their timeout)", "doors", doors,
		"door_timeout", c.cfg.DoorTimeout, "stop_wait", c.cfg.StopWait)
	select {
	case <-idle:
		c.log.Info("stopping: every door commanded reported open or timed out", "doors", doors)
	case <-c.done:
	case <-limit.C:
		c.log.Warn("stopping: doors commanded did not report open within the stop's wait: each gets its door fault now, its code not consumed",
			"doors", doors, "stop_wait", c.cfg.StopWait)
		go c.must(c.faultAwaited)
	}
	return nil
}

// faultAwaited ends the wait of every door commanded that has not reported
// open, as its door timeout would.
func (c *Controller) faultAwaited() {
	for _, d := range c.awaitedDoors() {
		c.fault(c.cycles[d], fmt.Sprintf("the gateway stopped before door %d reported open", d))
	}
}

// awaitedDoors returns the doors commanded that have not reported open yet.
func (c *Controller) awaitedDoors() []int {
	var doors []int
	for d, cy := range c.cycles {
		if cy.phase == awaitingOpen {
			doors = append(doors, d)
		}
	}
	slices.Sort(doors)
	return doors
}

// checkIdle ends Quiesce's wait once no door commanded awaits its open.
func (c *Controller) checkIdle() {
	for _, cy := range c.cycles {
		if cy.phase == awaitingOpen {
			return
		}
	}
	close(c.idle)
	c.idle = nil
}

// job is one piece of work for the work goroutine. One that must run even
// as the controller stops (a door's state the broker has acknowledged to the
// board, an ack to commit) is atStop; the rest (a code, a timer) is dropped
// then: the broker is closed, so no door can open and no answer can go out.
type job struct {
	fn     func()
	atStop bool
}

// drain runs the atStop jobs still queued when the controller stops: the
// broker has stopped before the controller and waited for its handlers, so
// nothing is queued after these.
func (c *Controller) drain() {
	dropped := 0
	for {
		select {
		case j := <-c.work:
			if j.atStop {
				j.fn()
			} else {
				dropped++
			}
		default:
			if dropped > 0 {
				c.log.Info("stopping: dropped queued codes and timers (the broker is closed; a screen sends its code again)", "dropped", dropped)
			}
			return
		}
	}
}

// Close stops the work goroutine and waits for it. Open door cycles stay persisted and are
// completed by the next start. It is safe to call more than once.
func (c *Controller) Close() error {
	c.mu.Lock()
	stop, first := c.stop, !c.shut
	c.shut = true
	c.mu.Unlock()
	switch {
	case stop != nil:
		stop()
		<-c.done
	case first:
		close(c.done) // never started: what waits on it gives up
	}
	return nil
}

// do hands fn to the work goroutine. It reports false once the controller has stopped.
func (c *Controller) do(fn func()) bool { return c.queue(job{fn: fn}) }

// must is do for work that runs even if the controller stops before it
// comes to it (see job).
func (c *Controller) must(fn func()) bool { return c.queue(job{fn: fn, atStop: true}) }

func (c *Controller) queue(j job) bool {
	select {
	case c.work <- j:
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
		c.display(reply, restarting(req.RequestID))
	}
}

// restarting is the answer to a code that comes while the locker stops.
func restarting(requestID string) contract.Display {
	return contract.Display{RequestID: requestID, Result: contract.ResultBusy,
		Message: "The locker is restarting; try again in a moment"}
}

func (c *Controller) code(req contract.CodeRequest, reply *Reply, received time.Time) {
	now := time.Now()
	answer := func(d contract.Display) {
		d.RequestID = req.RequestID
		c.m.attempt(d.Result)
		c.display(reply, d)
	}
	if c.quiescing {
		answer(restarting(req.RequestID)) // no door opens whose open might not be recorded
		return
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
	if r != nil {
		if cy := c.cycles[r.Door]; cy != nil && cy.phase == closing {
			// The store has not committed the door's closing yet: what
			// the code may do depends on it. Busy, not a refusal, so that
			// it counts for no lockout.
			answer(contract.Display{Result: contract.ResultBusy, Door: r.Door,
				Message: fmt.Sprintf("Door %d is still being recorded; try again in a moment", r.Door)})
			return
		}
	}
	switch c.verdict(r, kind, now) {
	case Refuse:
		answer(c.refusal(now))
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

// verdict judges the code of kind found in r (nil: no reservation has it)
// at now, reading the door's last cycle for a used code and refusing a code
// whose door the back-end deleted.
func (c *Controller) verdict(r *store.Reservation, kind string, now time.Time) Verdict {
	if r == nil {
		return Refuse
	}
	var last *store.Cycle
	if code := r.Codes[kind]; code != nil && !code.UsedAt.IsZero() {
		var err error
		if last, err = c.cfg.Store.LastCycle(r.Door); err != nil {
			c.log.Error("cannot read the door's last cycle; a used code is refused", "door", r.Door, "err", err)
		}
	}
	verdict := Judge(r, kind, now, c.cfg.Grace, last)
	if verdict == Open {
		// A door the back-end deleted opens for nobody, not even for a
		// code still within its grace period.
		if _, ok, err := c.cfg.Store.Door(r.Door); err != nil || !ok {
			if err != nil {
				c.log.Error("cannot read a door; its code is refused", "door", r.Door, "err", err)
			}
			verdict = Refuse
		}
	}
	return verdict
}

// refusal counts a refused code towards the lockout and returns its answer:
// the lockout when this refusal starts one, else an invalid code.
func (c *Controller) refusal(now time.Time) contract.Display {
	d := c.lock.fail(now)
	c.saveLockout()
	if d > 0 {
		c.event(contract.Event{Type: contract.EventLockout, RetryAfterS: seconds(d)}, nil)
		c.m.lockouts.Inc()
		return lockedOut(d)
	}
	return contract.Display{Result: contract.ResultInvalidCode, Message: "This code is not valid"}
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

// after runs fn on the work goroutine after d, if cy is still the door's cycle.
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
	// The broker has acknowledged the state to the board, which will not
	// send it again: it must be handled even if the controller is stopping
	// (a door closing is then committed before the stop).
	c.must(func() { c.doorState(door, st) })
}

func (c *Controller) doorState(door int, st contract.DoorState) {
	cy := c.cycles[door]
	if st.State == contract.DoorOpen || st.State == contract.DoorClosed {
		c.occupied[door] = st.Occupied // a fault or unknown state says nothing of it
	}
	switch st.State {
	case contract.DoorOpen:
		switch {
		case cy != nil && cy.phase == awaitingOpen:
			c.opened(cy)
		case (cy == nil || cy.phase == closing) && !c.forced[door]:
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
	// Until the opening commits, a restart would forget the cycle; the
	// closing commits it first if the retry has not by then.
	c.commit("door opening", cy.Door, func() error {
		if c.cycles[cy.Door] != cy || cy.phase != isOpen || cy.persisted {
			return nil // closed meanwhile: the closing persisted it
		}
		if _, err := c.cfg.Store.DoorOpened(cy.OpenedAt, cy.Cycle, nil); err != nil {
			return err
		}
		cy.persisted = true
		return nil
	})
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

// closed completes a cycle whose door reported closed. When the store
// cannot commit it, the cycle stays (phase closing) and a retry commits it
// with the closing's own time: the door need not report again.
func (c *Controller) closed(cy *cycle) {
	if cy.timer != nil {
		cy.timer.Stop()
	}
	cy.phase = closing
	cy.closedAt = time.Now()
	c.commit("door closing", cy.Door, func() error { return c.commitClose(cy) })
}

func (c *Controller) commitClose(cy *cycle) error {
	if c.cycles[cy.Door] != cy {
		return nil
	}
	now := cy.closedAt
	occupied := c.occupied[cy.Door]
	decide := func(sc store.Cycle, r *store.Reservation) store.Transition { return Close(sc, r, now, occupied) }
	done, _, err := c.cfg.Store.CloseCycle(now, cy.Door, decide)
	if err == nil && done == nil {
		if cy.persisted {
			// The store has no cycle although it had one: a commit that
			// reported a failure took effect. Nothing is left to do.
			c.log.Warn("a door closing was already committed", "door", cy.Door, "reservation", cy.Reservation)
		} else {
			// The opening was never persisted (the store failed then):
			// persist it now, so that the closing still changes the status
			// with its event.
			if _, err = c.cfg.Store.DoorOpened(cy.OpenedAt, cy.Cycle, nil); err != nil {
				return err
			}
			cy.persisted = true
			if _, _, err = c.cfg.Store.CloseCycle(now, cy.Door, decide); err != nil {
				return err
			}
		}
	}
	if err != nil {
		return err
	}
	delete(c.cycles, cy.Door)
	return nil
}

// HandleCommand handles a payload of locky/down/commands (support opens a door).
// It returns once the command's ack is committed, or held for retry when the
// store fails (it is then an ack with the error, committed once it can be).
func (c *Controller) HandleCommand(payload []byte) error {
	cmd, err := contract.DecodeCommand(payload)
	if err != nil {
		msgID := contract.MsgIDOf(payload)
		_, aerr := c.cfg.Store.Ack(time.Now(), msgID, err)
		if aerr != nil && c.must(func() { c.ack(msgID, err) }) {
			return nil
		}
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
	if c.quiescing {
		// Not acknowledged: the back-end's message stays undelivered, and
		// comes again once the locker is back.
		return fmt.Errorf("the locker is stopping: door %d was not opened and the command is not acknowledged: from the cloud it is delivered again after the restart, a local publisher must send it again", cmd.Door)
	}
	now := time.Now()
	if cy := c.cycles[cmd.Door]; cy != nil {
		if cy.phase == closing {
			c.ack(cmd.MsgID, fmt.Errorf("door %d closed but its closing is not committed yet (the locker's store fails: see /readyz); send the command again once the locker reports store.recovered", cmd.Door))
			return nil
		}
		c.ack(cmd.MsgID, fmt.Errorf("door %d is in a door cycle; try again once it is closed", cmd.Door))
		return nil
	}
	c.flush() // earlier writes first
	accepted, err := c.cfg.Store.RemoteOpen(now, cmd.MsgID, cmd.Door, cmd.Reason)
	if err != nil {
		c.ack(cmd.MsgID, fmt.Errorf("the locker cannot store the command, so it did nothing; send it again once the locker reports store.recovered: %w", err))
		return nil
	}
	if !accepted {
		return nil
	}
	c.command(&cycle{Cycle: store.Cycle{Door: cmd.Door, Kind: store.KindSupport, RequestID: cmd.MsgID}, started: now, msgID: cmd.MsgID})
	return nil
}

// event commits an upstream event (with its audit record when a is not nil),
// or holds it for retry; it keeps the time it happened at.
func (c *Controller) event(ev contract.Event, a *store.AuditRecord) {
	now := time.Now()
	if ev.At.IsZero() {
		ev.At = now.UTC()
	}
	c.commit("event "+ev.Type, ev.Door, func() error {
		_, _, err := c.cfg.Store.AppendEvent(now, ev, a)
		return err
	})
}

// ack commits the ack of a downstream message, or holds it for retry.
func (c *Controller) ack(msgID string, ackErr error) {
	c.commit("ack", 0, func() error {
		_, err := c.cfg.Store.Ack(time.Now(), msgID, ackErr)
		return err
	})
}

// saveLockout commits the lockout state; a retry saves the state as it is then.
func (c *Controller) saveLockout() {
	if c.lockoutPending {
		return // the held write saves the latest state
	}
	c.commit("lockout state", 0, func() error {
		if err := c.cfg.Store.SaveLockout(c.lock.state()); err != nil {
			c.lockoutPending = true
			return err
		}
		c.lockoutPending = false
		return nil
	})
}

// commit runs try, after the writes held for retry (so that they keep their
// order when the store works again); when it fails, it is held and retried
// with back-off until it succeeds. It runs on the work goroutine.
func (c *Controller) commit(what string, door int, try func() error) {
	c.flush()
	if err := try(); err != nil {
		// The store logs its failures, throttled; here only what waits, and
		// past the first only the door closings.
		level := slog.LevelDebug
		if len(c.pending) == 0 || what == "door closing" {
			level = slog.LevelWarn
		}
		c.log.Log(context.Background(), level, "cannot commit; retried with back-off until the store can, the door need not report again",
			"what", what, "door", door, "no_space", store.IsNoSpace(err), "held", len(c.pending)+1, "err", err)
		c.pending = append(c.pending, &pendingWrite{what: what, door: door, try: try})
		c.cfg.Store.SetPending("controller", len(c.pending))
		c.scheduleRetry()
	}
}

// flush tries the held writes again, oldest first; those that fail stay held.
func (c *Controller) flush() {
	if len(c.pending) == 0 {
		return
	}
	kept := c.pending[:0]
	var lastErr error
	for _, p := range c.pending {
		if err := p.try(); err != nil {
			lastErr = err
			kept = append(kept, p)
			continue
		}
		c.log.Info("committed after a retry", "what", p.what, "door", p.door)
	}
	clear(c.pending[len(kept):])
	c.pending = kept
	if len(kept) == 0 {
		c.retryDelay = 0
		if c.retryTimer != nil {
			c.retryTimer.Stop()
			c.retryTimer = nil
		}
	} else {
		c.log.Debug("writes still fail to commit", "pending", len(kept), "err", lastErr)
	}
	c.cfg.Store.SetPending("controller", len(c.pending))
}

// scheduleRetry arms the retry timer, the wait doubling from RetryBase up to
// RetryMax while the writes keep failing.
func (c *Controller) scheduleRetry() {
	if c.retryTimer != nil {
		return
	}
	switch {
	case c.retryDelay == 0:
		c.retryDelay = c.cfg.RetryBase
	case c.retryDelay < c.cfg.RetryMax:
		c.retryDelay = min(2*c.retryDelay, c.cfg.RetryMax)
	}
	var t *time.Timer
	t = time.AfterFunc(c.retryDelay, func() {
		c.do(func() {
			if c.retryTimer != t {
				return // flushed meanwhile; another timer may be armed
			}
			c.retryTimer = nil
			c.flush()
			if len(c.pending) > 0 {
				c.scheduleRetry()
			}
		})
	})
	c.retryTimer = t
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
