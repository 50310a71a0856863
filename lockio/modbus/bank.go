package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/locky-edge/locky/handlers/contract"
)

const (
	openQueue     = 64
	reasonNotRead = "sensor not read yet"
)

// Bank is a set of Modbus RTU boards on one or more serial buses, seen as
// doors. It implements handlers/door.Driver and is safe for concurrent use.
type Bank struct {
	cfg   Config
	log   *slog.Logger
	doors map[int]*door
	buses []*bus

	reportMu sync.Mutex // serialises calls of report, so states arrive in order
	mu       sync.Mutex // guards the fields below
	report   func(door int, st contract.DoorState)
	last     map[int]contract.DoorState // last state reported, per door
	started  bool
	closed   bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type door struct {
	Door
	bus   *bus
	board *board

	// Owned by the bus goroutine: an accepted pulse the sensor has not
	// answered yet, and a jam reported until the sensor reading changes.
	pending    bool
	since      time.Time // of the pending pulse
	jammed     bool
	jamReading bool // the sensor's open reading when the jam was reported
}

type bus struct {
	device  string
	boards  []*board
	opens   chan openCmd
	metrics *busMetrics
	down    atomic.Int64 // boards unreachable, for the gauge
}

type board struct {
	unit         byte
	doors        []*door
	first, count uint16 // the inputs read in one request

	inFault  bool // an episode is under way; its fault was reported
	failures int  // failed exchanges in a row
	backoff  time.Duration
	retryAt  time.Time
}

type openCmd struct {
	door *door
	at   time.Time
}

// New validates cfg, fills its defaults and returns a Bank; nothing is opened
// before Start.
func New(cfg Config) (*Bank, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bank{cfg: cfg, log: cfg.Logger.With("component", "modbus"), doors: map[int]*door{}, last: map[int]contract.DoorState{}}
	buses := map[string]*bus{}
	boards := map[string]map[int]*board{}
	for _, dc := range cfg.Doors {
		bs := buses[dc.Device]
		if bs == nil {
			bs = &bus{device: dc.Device, opens: make(chan openCmd, openQueue)}
			bs.metrics = newBusMetrics(cfg.Metrics, bs)
			buses[dc.Device] = bs
			boards[dc.Device] = map[int]*board{}
			b.buses = append(b.buses, bs)
		}
		bd := boards[dc.Device][dc.Unit]
		if bd == nil {
			bd = &board{unit: byte(dc.Unit)}
			bd.first, _ = dc.inputSpan()
			boards[dc.Device][dc.Unit] = bd
			bs.boards = append(bs.boards, bd)
		}
		if dc.Occupancy != nil { // the bank's own copy
			occupancy := *dc.Occupancy
			dc.Occupancy = &occupancy
		}
		d := &door{Door: dc, bus: bs, board: bd}
		bd.doors = append(bd.doors, d)
		b.doors[dc.Door] = d
	}
	for _, bs := range b.buses {
		sort.Slice(bs.boards, func(i, j int) bool { return bs.boards[i].unit < bs.boards[j].unit })
		for _, bd := range bs.boards {
			last := bd.first
			for _, d := range bd.doors {
				lo, hi := d.inputSpan()
				bd.first, last = min(bd.first, lo), max(last, hi)
			}
			bd.count = last - bd.first + 1
		}
	}
	return b, nil
}

// Watch registers the receiver of state changes and reports every door's
// current state to it: `unknown` for a door whose sensor was not read yet.
func (b *Bank) Watch(report func(door int, st contract.DoorState)) {
	b.reportMu.Lock()
	defer b.reportMu.Unlock()
	b.mu.Lock()
	b.report = report
	nums := make([]int, 0, len(b.doors))
	for n := range b.doors {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	states := make([]contract.DoorState, len(nums))
	for i, n := range nums {
		st, ok := b.last[n]
		if !ok {
			st = contract.DoorState{State: contract.DoorUnknown, Reason: reasonNotRead, At: time.Now().UTC()}
		}
		states[i] = st
	}
	b.mu.Unlock()
	for i, n := range nums {
		report(n, states[i])
	}
}

// Open queues a lock pulse for the door on its bus, ahead of the polls, and
// returns. The pulse is not an opening: the door reports `open` when its
// sensor says so.
func (b *Bank) Open(n int) error {
	d := b.doors[n]
	if d == nil {
		return fmt.Errorf("door %d: %w", n, ErrUnknownDoor)
	}
	// Queued under the lock, so that Close finds every command not sent.
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return fmt.Errorf("door %d: %w", n, ErrClosed)
	case !b.started:
		return fmt.Errorf("door %d: %w", n, ErrNotStarted)
	}
	select {
	case d.bus.opens <- openCmd{door: d, at: time.Now()}:
		return nil
	default:
		d.bus.metrics.opensDropped.Inc()
		return fmt.Errorf("door %d on %s: %w", n, d.bus.device, ErrQueueFull)
	}
}

// Start opens every bus and starts polling it, each from its own goroutine,
// until ctx ends or Close is called. A bus whose adapter cannot be opened
// does not fail Start: its doors report `fault` and it is reopened with
// back-off, so one unplugged adapter leaves the other buses serving.
func (b *Bank) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return errors.New("modbus: bank already started")
	}
	b.started = true
	ctx, b.cancel = context.WithCancel(ctx)
	for _, bs := range b.buses {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.runBus(ctx, bs)
		}()
	}
	return nil
}

// Close stops polling, switches off any coil still pulsing, closes the ports
// and waits for the bus goroutines. An open command not sent yet is
// dropped, logged: no lock is pulsed once the bank closes, as no state it
// reports then is heard. It is safe to call more than once.
func (b *Bank) Close() error {
	b.mu.Lock()
	b.closed = true
	if b.cancel != nil {
		b.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
	for _, bs := range b.buses {
		for len(bs.opens) > 0 {
			b.dropOnClose(bs, (<-bs.opens).door)
		}
	}
	return nil
}

// dropOnClose logs and counts an open command dropped because the bank closes.
func (b *Bank) dropOnClose(bs *bus, d *door) {
	bs.metrics.opensDropped.Inc()
	b.log.Warn("open command dropped, the lock not pulsed: the bank is closing", "door", d.Door.Door, "bus", bs.device)
}

// publish reports st for door n if it differs from the last one reported:
// in state, reason or occupancy (a parcel taken out of a closed door is a
// change).
func (b *Bank) publish(n int, st contract.DoorState) {
	b.reportMu.Lock()
	defer b.reportMu.Unlock()
	b.mu.Lock()
	prev, ok := b.last[n]
	if ok && prev.State == st.State && prev.Reason == st.Reason && sameOccupancy(prev.Occupied, st.Occupied) {
		b.mu.Unlock()
		return
	}
	st.At = time.Now().UTC()
	b.last[n] = st
	report := b.report
	b.mu.Unlock()
	if report != nil {
		report(n, st)
	}
}

func sameOccupancy(a, b *bool) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// fault starts an episode on the board: its doors report `fault` with the
// reason once; the board is retried with back-off. It returns whether the
// episode is new.
func (b *Bank) fault(bs *bus, bd *board, reason string) bool {
	if bd.backoff == 0 {
		bd.backoff = b.cfg.RetryMin
	} else {
		bd.backoff = min(2*bd.backoff, b.cfg.RetryMax)
	}
	bd.retryAt = time.Now().Add(bd.backoff)
	if bd.inFault {
		return false
	}
	bd.inFault = true
	bs.down.Add(1)
	for _, d := range bd.doors {
		// Unread, a pulse cannot be judged and a jam cannot be seen to end:
		// after the board is back, its doors report what the sensors say.
		d.pending, d.jammed = false, false
		b.publish(d.Door.Door, contract.DoorState{State: contract.DoorFault, Reason: reason})
	}
	return true
}

// sensed reports the doors of a board that answered.
func (b *Bank) sensed(bs *bus, bd *board, bits []bool) {
	if bd.inFault {
		bd.inFault = false
		bs.down.Add(-1)
		b.log.Info("board answers again", "bus", bs.device, "unit", bd.unit)
	}
	bd.backoff, bd.retryAt, bd.failures = 0, time.Time{}, 0
	now := time.Now()
	for _, d := range bd.doors {
		in := bits[d.Input-bd.first]
		open := in == (d.Polarity == OpenWhen1)
		if b.jammed(bs, d, open, now) {
			continue
		}
		st := contract.DoorState{State: contract.DoorClosed, Reason: "sensor"}
		if open {
			st.State = contract.DoorOpen
		}
		if d.Occupancy != nil {
			occupied := bits[*d.Occupancy-bd.first] == (d.OccupancyPolarity == OccupiedWhen1)
			st.Occupied = &occupied
		}
		b.publish(d.Door.Door, st)
	}
}

// jammed follows an accepted pulse: the sensor reading open ends it; no
// change within JamTimeout is a fault with reason "jammed", kept until the
// reading changes (the door was forced, or the lock freed). It returns
// whether the door is jammed, so that its sensor state is not reported.
func (b *Bank) jammed(bs *bus, d *door, open bool, now time.Time) bool {
	if d.pending && open {
		d.pending = false
	}
	if d.jammed {
		if open == d.jamReading {
			return true
		}
		d.jammed = false
	}
	if !d.pending || now.Sub(d.since) <= b.cfg.JamTimeout {
		return false
	}
	d.pending, d.jammed, d.jamReading = false, true, open
	b.log.Warn("lock pulsed but the door did not open", "door", d.Door.Door, "bus", bs.device, "unit", d.board.unit, "coil", d.Coil)
	b.publish(d.Door.Door, contract.DoorState{State: contract.DoorFault,
		Reason: fmt.Sprintf("jammed: coil %d of unit %d was pulsed, the door sensor (input %d) did not change", d.Coil, d.board.unit, d.Input)})
	return true
}

func newBusMetrics(set *metrics.Set, bs *bus) *busMetrics {
	l := fmt.Sprintf("bus=%q", bs.device)
	m := &busMetrics{
		framesSent: map[string]*metrics.Counter{
			"coil": set.GetOrCreateCounter(`locky_modbus_frames_sent_total{` + l + `,kind="coil"}`),
			"poll": set.GetOrCreateCounter(`locky_modbus_frames_sent_total{` + l + `,kind="poll"}`),
		},
		response:     set.GetOrCreateHistogram(`locky_modbus_response_latency_seconds{` + l + `}`),
		pollCycle:    set.GetOrCreateHistogram(`locky_modbus_poll_cycle_seconds{` + l + `}`),
		opensDropped: set.GetOrCreateCounter(`locky_modbus_opens_dropped_total{` + l + `}`),
		errors:       map[string]*metrics.Counter{},
	}
	for _, kind := range []string{"timeout", "crc", "frame", "exception", "unplugged"} {
		m.errors[kind] = set.GetOrCreateCounter(fmt.Sprintf(`locky_modbus_errors_total{%s,kind=%q}`, l, kind))
	}
	set.GetOrCreateGauge(`locky_modbus_boards_unreachable{`+l+`}`, func() float64 { return float64(bs.down.Load()) })
	return m
}

type busMetrics struct {
	opensDropped        *metrics.Counter
	response, pollCycle *metrics.Histogram
	framesSent, errors  map[string]*metrics.Counter // by kind
}
