package modbus

import (
	"context"
	"errors"
	"time"
)

// busLoop is the state of one bus's goroutine: nothing in it is shared.
type busLoop struct {
	b   *Bank
	bs  *bus
	ctx context.Context // ends when the bank closes

	c           *rtu // nil while the port is closed
	portBackoff time.Duration
	portRetry   time.Time
	pulses      map[*door]time.Time // coil on until
	offRetry    time.Time           // after a failed coil-off
	next        int                 // the board to poll next
	cycleStart  time.Time
	nextCycle   time.Time
}

// runBus owns one serial bus until ctx ends. Each turn does one thing, in
// this order: switch off a coil whose pulse is over (a lock must never stay
// energised), send a queued open command, poll the next board of the cycle;
// otherwise it waits for the next of these to fall due, or for a command.
func (b *Bank) runBus(ctx context.Context, bs *bus) {
	l := &busLoop{b: b, bs: bs, ctx: ctx, pulses: map[*door]time.Time{}, nextCycle: time.Now()}
	defer l.shutdown()
	for ctx.Err() == nil {
		if l.c == nil && !l.openPort(ctx) {
			continue
		}
		if l.offDue() || l.openQueued() || l.pollDue() {
			continue
		}
		wake := l.nextCycle
		for _, until := range l.pulses {
			wake = minTime(wake, maxTime(until, l.offRetry))
		}
		if cmd, ok := b.sleep(ctx, wake, bs.opens); ok {
			l.sendOpen(cmd)
		}
	}
}

// openPort opens the serial adapter once its retry time has come; it
// returns whether the port is open.
func (l *busLoop) openPort(ctx context.Context) bool {
	if time.Now().Before(l.portRetry) {
		l.b.sleep(ctx, l.portRetry, nil)
		return false
	}
	p, err := openSerial(l.bs.device, &l.b.cfg)
	if err != nil {
		l.bs.metrics.errors["unplugged"].Inc()
		l.b.log.Debug("cannot open the serial adapter", "bus", l.bs.device, "err", err, "retry_in", l.portBackoff)
		l.closePort(err)
		return false
	}
	l.c = &rtu{p: p, timeout: l.b.cfg.Timeout, silence: l.b.cfg.FrameSilence}
	l.portBackoff = 0
	l.b.log.Info("serial adapter open", "bus", l.bs.device)
	return true
}

// closePort closes the port after err and faults every board of the bus
// until it is open again.
func (l *busLoop) closePort(err error) {
	if l.c != nil {
		if cerr := l.c.p.Close(); cerr != nil {
			l.b.log.Debug("cannot close the serial port", "bus", l.bs.device, "err", cerr)
		}
		l.c = nil
	}
	l.portBackoff = min(max(2*l.portBackoff, l.b.cfg.RetryMin), l.b.cfg.RetryMax)
	l.portRetry = time.Now().Add(l.portBackoff)
	reason := "adapter unplugged: " + err.Error()
	for _, bd := range l.bs.boards {
		l.b.fault(l.bs, bd, reason)
		bd.retryAt = time.Time{} // poll it as soon as the port is back
	}
}

// failed handles a failed exchange with bd. A lost port closes it; a board
// error counts towards the board's fault: one garbled or lost reply on a
// noisy bus is retried on the next poll, FaultAfter in a row are a fault.
func (l *busLoop) failed(bd *board, err error) {
	if errors.Is(err, ErrPort) {
		l.b.log.Warn("serial adapter lost; reopening with back-off", "bus", l.bs.device, "err", err)
		l.closePort(err)
		return
	}
	bd.failures++
	if !bd.inFault && bd.failures < l.b.cfg.FaultAfter {
		l.b.log.Debug("board reply lost or damaged; retried on the next poll", "bus", l.bs.device, "unit", bd.unit, "err", err, "in_a_row", bd.failures)
		return
	}
	if l.b.fault(l.bs, bd, err.Error()) {
		l.b.log.Warn("board failed; its doors are in fault, retrying with back-off", "bus", l.bs.device, "unit", bd.unit, "err", err, "in_a_row", bd.failures)
	} else {
		l.b.log.Debug("board still failing", "bus", l.bs.device, "unit", bd.unit, "err", err, "retry_in", bd.backoff)
	}
}

// exchange runs one request, counting it, its errors and its latency.
func (l *busLoop) exchange(kind string, f func() error) error {
	m := l.bs.metrics
	m.framesSent[kind].Inc()
	start := time.Now()
	err := f()
	var ex *ExceptionError
	if err == nil || errors.As(err, &ex) {
		m.response.UpdateDuration(start)
	}
	if err != nil {
		m.errors[errorKind(err)].Inc()
	}
	return err
}

// writeCoil sets a lock coil, once more if the board's answer is lost or
// damaged (not for an exception, which is an answer): writing a coil is
// idempotent, and one garbled reply must not keep a door shut.
func (l *busLoop) writeCoil(d *door, on bool) error {
	var err error
	for range 2 {
		err = l.exchange("coil", func() error { return l.c.writeCoil(d.board.unit, d.Coil, on) })
		var ex *ExceptionError
		if err == nil || errors.Is(err, ErrPort) || errors.As(err, &ex) {
			return err // done, or an answer that a second try would not change
		}
	}
	return err
}

// sendOpen pulses the door's lock, unless the command waited too long.
func (l *busLoop) sendOpen(cmd openCmd) {
	d, bs := cmd.door, l.bs
	if l.ctx.Err() != nil {
		l.b.dropOnClose(bs, d)
		return
	}
	if age := time.Since(cmd.at); age > l.b.cfg.OpenWait {
		bs.metrics.opensDropped.Inc()
		l.b.log.Warn("open command waited too long for the bus; dropped", "door", d.Door.Door, "bus", bs.device, "waited", age)
		return
	}
	err := l.writeCoil(d, true)
	// Either way the coil is switched off after the pulse: a board whose
	// answer was lost may have switched it on.
	l.pulses[d] = time.Now().Add(l.b.cfg.PulseLength)
	if err != nil {
		l.b.log.Warn("lock pulse not confirmed by the board; its coil is switched off after the pulse all the same",
			"door", d.Door.Door, "bus", bs.device, "unit", d.board.unit, "err", err)
		// Only a lost adapter counts here: the board may have pulsed the
		// lock, so its doors must not turn fault for this (the controller
		// would end the cycle of a door that is opening); the polls say
		// whether the board answers, and the sensor whether the door opened.
		if errors.Is(err, ErrPort) {
			l.failed(d.board, err)
		}
		return
	}
	// The pulse was accepted; only the sensor tells whether the door
	// opened (sensed reports a door whose sensor never changes as jammed).
	d.pending, d.since = true, time.Now()
	l.b.log.Info("lock pulsed", "door", d.Door.Door, "bus", bs.device, "unit", d.board.unit, "coil", d.Coil)
}

func (l *busLoop) switchOff(d *door) error {
	err := l.writeCoil(d, false)
	if err == nil {
		delete(l.pulses, d)
	}
	return err
}

// offDue switches off the coil whose pulse ended first, if any is due; it
// returns whether it did something.
func (l *busLoop) offDue() bool {
	now := time.Now()
	var due *door
	for d, until := range l.pulses {
		if !now.Before(until) && (due == nil || until.Before(l.pulses[due])) {
			due = d
		}
	}
	if due == nil || now.Before(l.offRetry) {
		return false
	}
	if err := l.switchOff(due); err != nil {
		l.b.log.Error("cannot switch a lock coil off; retrying", "door", due.Door.Door, "bus", l.bs.device, "err", err)
		l.failed(due.board, err)
		l.offRetry = time.Now().Add(l.b.cfg.RetryMin)
	}
	return true
}

// openQueued sends one queued open command, if there is one.
func (l *busLoop) openQueued() bool {
	select {
	case cmd := <-l.bs.opens:
		l.sendOpen(cmd)
		return true
	default:
		return false
	}
}

// pollDue reads the next board of the cycle if the cycle is due; it
// returns whether it did.
func (l *busLoop) pollDue() bool {
	now := time.Now()
	if now.Before(l.nextCycle) {
		return false
	}
	if l.next == 0 {
		l.cycleStart = now
	}
	bd := l.bs.boards[l.next]
	l.next++
	if !now.Before(bd.retryAt) {
		var bits []bool
		err := l.exchange("poll", func() (err error) {
			bits, err = l.c.readInputs(bd.unit, bd.first, bd.count)
			return err
		})
		if err != nil {
			l.failed(bd, err)
		} else {
			l.b.sensed(l.bs, bd, bits)
		}
	}
	if l.next == len(l.bs.boards) {
		l.next = 0
		l.bs.metrics.pollCycle.UpdateDuration(l.cycleStart)
		l.nextCycle = l.cycleStart.Add(l.b.cfg.PollInterval)
	}
	return true
}

// shutdown switches off every coil still on and closes the port.
func (l *busLoop) shutdown() {
	if l.c == nil {
		for d := range l.pulses {
			l.b.log.Error("closed with a lock coil possibly still on: the adapter is gone", "door", d.Door.Door, "bus", l.bs.device)
		}
		return
	}
	for d := range l.pulses {
		if err := l.switchOff(d); err != nil {
			l.b.log.Error("cannot switch a lock coil off on close", "door", d.Door.Door, "bus", l.bs.device, "err", err)
		}
	}
	if err := l.c.p.Close(); err != nil {
		l.b.log.Debug("cannot close the serial port", "bus", l.bs.device, "err", err)
	}
}

// sleep waits until t, ctx's end or a command on opens (nil: none).
func (b *Bank) sleep(ctx context.Context, t time.Time, opens <-chan openCmd) (openCmd, bool) {
	d := time.Until(t)
	if d <= 0 {
		return openCmd{}, false
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	case cmd := <-opens:
		return cmd, true
	}
	return openCmd{}, false
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
