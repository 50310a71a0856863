package modbus

import (
	"context"
	"errors"
	"time"
)

// runBus owns one serial bus until ctx ends. Each turn does one thing, in
// this order: switch off a coil whose pulse is over (a lock must never stay
// energised), send a queued open command, poll the next board of the cycle;
// otherwise it waits for the next of these to fall due, or for a command.
func (b *Bank) runBus(ctx context.Context, bs *bus) {
	var (
		c           *rtu // nil while the port is closed
		portBackoff time.Duration
		portRetry   time.Time
		pulses      = map[*door]time.Time{} // coil on until
		offRetry    time.Time               // after a failed coil-off
		next        int                     // the board to poll next
		cycleStart  time.Time
		nextCycle   = time.Now()
	)
	closePort := func(err error) {
		if c != nil {
			if cerr := c.p.Close(); cerr != nil {
				b.log.Debug("cannot close the serial port", "bus", bs.device, "err", cerr)
			}
			c = nil
		}
		portBackoff = min(max(2*portBackoff, b.cfg.RetryMin), b.cfg.RetryMax)
		portRetry = time.Now().Add(portBackoff)
		reason := "adapter unplugged: " + err.Error()
		for _, bd := range bs.boards {
			b.fault(bs, bd, reason)
			bd.retryAt = time.Time{} // poll it as soon as the port is back
		}
	}
	// failed handles a failed exchange with bd; it returns false when the
	// port was lost.
	failed := func(bd *board, err error) {
		if errors.Is(err, ErrPort) {
			b.log.Warn("serial adapter lost; reopening with back-off", "bus", bs.device, "err", err)
			closePort(err)
			return
		}
		if b.fault(bs, bd, err.Error()) {
			b.log.Warn("board failed; its doors are in fault, retrying with back-off", "bus", bs.device, "unit", bd.unit, "err", err)
		} else {
			b.log.Debug("board still failing", "bus", bs.device, "unit", bd.unit, "err", err, "retry_in", bd.backoff)
		}
	}
	exchange := func(kind string, f func() error) error {
		bs.metrics.framesSent[kind].Inc()
		start := time.Now()
		err := f()
		var ex *ExceptionError
		if err == nil || errors.As(err, &ex) {
			bs.metrics.response.UpdateDuration(start)
		}
		if err != nil {
			bs.metrics.errors[errorKind(err)].Inc()
		}
		return err
	}
	sendOpen := func(cmd openCmd) {
		d := cmd.door
		if age := time.Since(cmd.at); age > b.cfg.OpenWait {
			bs.metrics.opensDropped.Inc()
			b.log.Warn("open command waited too long for the bus; dropped", "door", d.Door.Door, "bus", bs.device, "waited", age)
			return
		}
		if err := exchange("coil", func() error { return c.writeCoil(d.board.unit, d.Coil, true) }); err != nil {
			// The board may have switched the coil on and its answer been
			// lost: switch it off all the same, or the lock stays energised.
			pulses[d] = time.Now().Add(b.cfg.PulseLength)
			b.log.Warn("lock pulse not confirmed by the board; its coil is switched off after the pulse all the same",
				"door", d.Door.Door, "bus", bs.device, "unit", d.board.unit, "err", err)
			failed(d.board, err)
			return
		}
		// The pulse was accepted; only the sensor tells whether the door
		// opened. A pulse with no sensor change (a jammed lock) reports
		// nothing here: the controller times out and raises door_fault.
		pulses[d] = time.Now().Add(b.cfg.PulseLength)
		b.log.Info("lock pulsed", "door", d.Door.Door, "bus", bs.device, "unit", d.board.unit, "coil", d.Coil)
	}
	switchOff := func(d *door) error {
		err := exchange("coil", func() error { return c.writeCoil(d.board.unit, d.Coil, false) })
		if err == nil {
			delete(pulses, d)
		}
		return err
	}
	defer func() {
		if c == nil {
			for d := range pulses {
				b.log.Error("closed with a lock coil possibly still on: the adapter is gone", "door", d.Door.Door, "bus", bs.device)
			}
			return
		}
		for d := range pulses {
			if err := switchOff(d); err != nil {
				b.log.Error("cannot switch a lock coil off on close", "door", d.Door.Door, "bus", bs.device, "err", err)
			}
		}
		if err := c.p.Close(); err != nil {
			b.log.Debug("cannot close the serial port", "bus", bs.device, "err", err)
		}
	}()

	for ctx.Err() == nil {
		now := time.Now()
		if c == nil {
			if now.Before(portRetry) {
				b.sleep(ctx, portRetry, nil)
				continue
			}
			p, err := openSerial(bs.device, &b.cfg)
			if err != nil {
				bs.metrics.errors["unplugged"].Inc()
				b.log.Debug("cannot open the serial adapter", "bus", bs.device, "err", err, "retry_in", portBackoff)
				closePort(err)
				continue
			}
			c = &rtu{p: p, timeout: b.cfg.Timeout, silence: b.cfg.FrameSilence}
			portBackoff = 0
			b.log.Info("serial adapter open", "bus", bs.device)
		}

		// 1. coils whose pulse is over
		var due *door
		for d, until := range pulses {
			if !now.Before(until) && (due == nil || until.Before(pulses[due])) {
				due = d
			}
		}
		if due != nil && !now.Before(offRetry) {
			if err := switchOff(due); err != nil {
				b.log.Error("cannot switch a lock coil off; retrying", "door", due.Door.Door, "bus", bs.device, "err", err)
				failed(due.board, err)
				offRetry = time.Now().Add(b.cfg.RetryMin)
			}
			continue
		}

		// 2. open commands, before any poll
		select {
		case cmd := <-bs.opens:
			sendOpen(cmd)
			continue
		default:
		}

		// 3. the next board of the poll cycle
		if !now.Before(nextCycle) {
			if next == 0 {
				cycleStart = now
			}
			bd := bs.boards[next]
			next++
			if !now.Before(bd.retryAt) {
				var bits []bool
				err := exchange("poll", func() (err error) {
					bits, err = c.readInputs(bd.unit, bd.first, bd.count)
					return err
				})
				if err != nil {
					failed(bd, err)
				} else {
					b.sensed(bs, bd, bits)
				}
			}
			if next == len(bs.boards) {
				next = 0
				bs.metrics.pollCycle.UpdateDuration(cycleStart)
				nextCycle = cycleStart.Add(b.cfg.PollInterval)
			}
			continue
		}

		wake := nextCycle
		for _, until := range pulses {
			wake = minTime(wake, maxTime(until, offRetry))
		}
		if cmd, ok := b.sleep(ctx, wake, bs.opens); ok {
			sendOpen(cmd)
		}
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
