package kerong

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.bug.st/serial"

	"github.com/locky-edge/locky/handlers/contract"
)

// Fault kinds: the first word of a fault reason and the kind label of
// locky_kerong_errors_total.
const (
	kindTimeout   = "timeout"
	kindChecksum  = "checksum"
	kindUnplugged = "adapter unplugged"
)

// Bank drives the lock boards of one or more RS485 buses. It implements the
// door handler's Driver. It is safe for concurrent use.
type Bank struct {
	cfg   Config
	log   *slog.Logger
	buses []*bus
	doors map[int]*door

	reportMu sync.Mutex // serialises reports, so a door's states arrive in order
	report   func(door int, st contract.DoorState)
	last     map[int]contract.DoorState // last state of each door, reported or not

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// bus is one serial adapter and the boards on it. Its fields below opens
// belong to its goroutine.
type bus struct {
	bank   *Bank
	path   string
	cfg    Bus
	mode   *serial.Mode
	boards []*board
	opens  chan openReq
	down   atomic.Bool  // the adapter is not open
	faults atomic.Int64 // boards unreachable, for the gauge

	ctx  context.Context // ends when the bank closes
	port serial.Port
	buf  []byte
	rd   []byte

	sent        map[string]*metrics.Counter
	errs        map[string]*metrics.Counter
	dropped     *metrics.Counter // unlocks that waited past OpenWait
	latency     *metrics.Histogram
	cycle       *metrics.Histogram
	downSince   bool
	downReason  string
	openBackoff time.Duration
}

type board struct {
	addr     byte
	channels int
	doors    []*door

	faulted  bool
	reason   string
	failures int
	nextTry  time.Time
}

type door struct {
	n           int
	bus         *bus
	board       *board
	lock        int
	openWhenSet bool

	// Fields below belong to the bus goroutine.
	pending    bool // unlocked, the sensor has not shown open yet
	since      time.Time
	jammed     bool // reported jammed; stays so until the reading changes
	jamReading bool
}

// New validates cfg, fills its defaults and returns a Bank that reports
// every door as unknown until its board is read.
func New(cfg Config) (*Bank, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bank{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "kerong"),
		doors: map[int]*door{},
		last:  map[int]contract.DoorState{},
	}
	buses := map[string]*bus{}
	boards := map[string]map[int]*board{}
	for _, n := range sortedDoors(cfg.Doors) {
		d := cfg.Doors[n]
		bs := buses[d.Bus]
		if bs == nil {
			bs = b.newBus(d.Bus, cfg.Buses[d.Bus])
			buses[d.Bus] = bs
			boards[d.Bus] = map[int]*board{}
			b.buses = append(b.buses, bs)
		}
		bd := boards[d.Bus][d.Board]
		if bd == nil {
			bd = &board{addr: byte(d.Board), channels: defaultChannels}
			boards[d.Bus][d.Board] = bd
			bs.boards = append(bs.boards, bd)
		}
		if d.Channels != 0 {
			bd.channels = d.Channels
		}
		dr := &door{n: n, bus: bs, board: bd, lock: d.Lock, openWhenSet: d.OpenWhenSet}
		bd.doors = append(bd.doors, dr)
		b.doors[n] = dr
		b.last[n] = contract.DoorState{State: contract.DoorUnknown, Reason: "not read yet", At: time.Now().UTC()}
	}
	for _, bs := range b.buses {
		sort.Slice(bs.boards, func(i, j int) bool { return bs.boards[i].addr < bs.boards[j].addr })
	}
	return b, nil
}

func (b *Bank) newBus(path string, cfg Bus) *bus {
	p, _ := parity(cfg.Parity) // validated
	stop := serial.OneStopBit
	if cfg.StopBits == 2 {
		stop = serial.TwoStopBits
	}
	bs := &bus{
		bank:  b,
		path:  path,
		cfg:   cfg,
		mode:  &serial.Mode{BaudRate: cfg.Baud, DataBits: 8, Parity: p, StopBits: stop},
		opens: make(chan openReq, 64),
		rd:    make([]byte, 64),
		sent:  map[string]*metrics.Counter{},
		errs:  map[string]*metrics.Counter{},
	}
	set := b.cfg.Metrics
	for _, k := range []string{"unlock", "query"} {
		bs.sent[k] = set.GetOrCreateCounter(fmt.Sprintf(`locky_kerong_frames_sent_total{bus=%q,kind=%q}`, path, k))
	}
	for _, k := range []string{"timeout", "checksum", "unplugged"} {
		bs.errs[k] = set.GetOrCreateCounter(fmt.Sprintf(`locky_kerong_errors_total{bus=%q,kind=%q}`, path, k))
	}
	bs.dropped = set.GetOrCreateCounter(fmt.Sprintf(`locky_kerong_opens_dropped_total{bus=%q}`, path))
	bs.latency = set.GetOrCreateHistogram(fmt.Sprintf(`locky_kerong_response_latency_seconds{bus=%q}`, path))
	bs.cycle = set.GetOrCreateHistogram(fmt.Sprintf(`locky_kerong_poll_cycle_seconds{bus=%q}`, path))
	set.GetOrCreateGauge(fmt.Sprintf(`locky_kerong_boards_unreachable{bus=%q}`, path), func() float64 {
		return float64(bs.faults.Load())
	})
	return bs
}

func parity(s string) (serial.Parity, error) {
	switch s {
	case "none":
		return serial.NoParity, nil
	case "even":
		return serial.EvenParity, nil
	case "odd":
		return serial.OddParity, nil
	}
	return 0, fmt.Errorf("parity %q; use none, even or odd: %w", s, ErrConfig)
}

// Watch registers the receiver of state changes and reports every door's
// current state to it: unknown for a door not read yet.
func (b *Bank) Watch(report func(door int, st contract.DoorState)) {
	b.reportMu.Lock()
	defer b.reportMu.Unlock()
	b.report = report
	for _, n := range sortedDoors(b.cfg.Doors) {
		report(n, b.last[n])
	}
}

// emit records a door's state and reports it if it changed (a fault also
// when its reason changed).
func (b *Bank) emit(n int, state, reason string) {
	b.reportMu.Lock()
	defer b.reportMu.Unlock()
	prev := b.last[n]
	if prev.State == state && (state != contract.DoorFault || prev.Reason == reason) {
		return
	}
	st := contract.DoorState{State: state, Reason: reason, At: time.Now().UTC()}
	b.last[n] = st
	if b.report != nil {
		b.report(n, st)
	}
}

// Start opens the buses and starts polling them, each from its own
// goroutine, until ctx ends or Close is called. An adapter that cannot be
// opened is not an error: its doors report a fault and it is retried.
func (b *Bank) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kerong: Start after Close; make a new Bank")
	}
	if b.started {
		return errors.New("kerong: Start called twice")
	}
	b.started = true
	ctx, b.cancel = context.WithCancel(ctx)
	for _, bs := range b.buses {
		bs.openPort()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			bs.run(ctx)
		}()
	}
	return nil
}

// Close stops polling, closes the ports and waits for the goroutines. An
// unlock not sent yet is dropped, logged: no lock is released once the bank
// closes, as no state it reports then is heard. It is safe to call more
// than once.
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
			bs.dropOnClose(<-bs.opens)
		}
	}
	return nil
}

// dropOnClose logs and counts an unlock dropped because the bank closes.
func (bs *bus) dropOnClose(r openReq) {
	bs.dropped.Inc()
	bs.bank.log.Warn("unlock dropped, the lock not released: the bank is closing", "door", r.d.n, "bus", bs.path)
}

// Open queues an unlock pulse for door; it goes out before the bus's next
// poll. It does not wait for the door: the sensor says when it is open.
func (b *Bank) Open(n int) error {
	d, ok := b.doors[n]
	if !ok {
		return fmt.Errorf("kerong: door %d: %w", n, ErrUnknownDoor)
	}
	// Queued under the lock, so that Close finds every unlock not sent.
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started || b.closed {
		return ErrNotStarted
	}
	if d.bus.down.Load() {
		return fmt.Errorf("kerong: door %d on %s: %w", n, d.bus.path, ErrBusDown)
	}
	select {
	case d.bus.opens <- openReq{d, time.Now()}:
		return nil
	default:
		return fmt.Errorf("kerong: door %d on %s: %w", n, d.bus.path, ErrQueueFull)
	}
}

// openPort opens the adapter; on failure every door of the bus reports a
// fault.
func (bs *bus) openPort() bool {
	p, err := serial.Open(bs.path, bs.mode)
	if err == nil {
		bs.port = p
		bs.down.Store(false)
		if bs.downSince {
			bs.bank.log.Info("bus adapter is back", "bus", bs.path)
		}
		bs.downSince = false
		return true
	}
	bs.unplugged(fmt.Errorf("cannot open %q: %w", bs.path, err))
	return false
}

// unplugged closes the port and faults every board of the bus.
func (bs *bus) unplugged(err error) {
	if bs.port != nil {
		if cerr := bs.port.Close(); cerr != nil {
			bs.bank.log.Debug("closing a failed port", "bus", bs.path, "err", cerr)
		}
		bs.port = nil
	}
	bs.down.Store(true)
	bs.errs["unplugged"].Inc()
	reason := kindUnplugged + ": " + err.Error()
	if !bs.downSince {
		bs.bank.log.Error("bus adapter unavailable; retrying with back-off (check the USB-RS485 adapter)", "bus", bs.path, "err", err)
		bs.downSince = true
		bs.downReason = reason
	}
	for _, bd := range bs.boards {
		bs.fault(bd, bs.downReason)
	}
	for { // what waited for this adapter is not sent when it comes back
		select {
		case r := <-bs.opens:
			bs.dropped.Inc()
			bs.bank.log.Warn("unlock dropped: its bus adapter is gone", "door", r.d.n, "bus", bs.path)
		default:
			return
		}
	}
}

func (bs *bus) fault(bd *board, reason string) {
	if !bd.faulted {
		bs.faults.Add(1)
	}
	if bd.faulted && bd.reason == reason {
		return
	}
	bd.faulted, bd.reason = true, reason
	for _, d := range bd.doors {
		// Unread, an unlock cannot be judged and a jam cannot be seen to
		// end: once the board is back its doors report what it says.
		d.pending, d.jammed = false, false
		bs.bank.emit(d.n, contract.DoorFault, reason)
	}
}

func (bs *bus) run(ctx context.Context) {
	bs.ctx = ctx
	defer func() {
		if bs.port != nil {
			if err := bs.port.Close(); err != nil {
				bs.bank.log.Warn("cannot close the bus port", "bus", bs.path, "err", err)
			}
			bs.port = nil
		}
	}()
	poll := bs.bank.cfg.PollInterval
	bs.openBackoff = poll
	for ctx.Err() == nil {
		if bs.port == nil {
			if !bs.openPort() {
				if !sleep(ctx, bs.openBackoff) {
					return
				}
				bs.openBackoff = min(2*bs.openBackoff, bs.bank.cfg.MaxBackoff)
				continue
			}
			bs.openBackoff = poll
		}
		start := time.Now()
		for _, bd := range bs.boards {
			bs.serveOpens()
			if bs.port == nil || ctx.Err() != nil {
				break
			}
			if bd.faulted && time.Now().Before(bd.nextTry) {
				continue
			}
			bs.poll(bd)
		}
		if bs.port == nil {
			continue
		}
		bs.cycle.UpdateDuration(start)
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case r := <-bs.opens:
			t.Stop()
			bs.unlock(r)
		case <-t.C:
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serveOpens sends every queued unlock: they go before the polls.
func (bs *bus) serveOpens() {
	for bs.port != nil {
		select {
		case r := <-bs.opens:
			bs.unlock(r)
		default:
			return
		}
	}
}

// openReq is an unlock asked for, and when.
type openReq struct {
	d  *door
	at time.Time
}

func (bs *bus) unlock(r openReq) {
	d := r.d
	if bs.ctx.Err() != nil {
		bs.dropOnClose(r)
		return
	}
	if waited := time.Since(r.at); waited > bs.bank.cfg.OpenWait {
		bs.dropped.Inc()
		bs.bank.log.Warn("unlock waited too long for the bus; dropped, the controller has given up on it", "door", d.n, "bus", bs.path, "waited", waited)
		return
	}
	if bs.port == nil {
		return
	}
	if err := bs.sendUnlock(d); err != nil {
		bs.bank.log.Warn("unlock not acknowledged", "door", d.n, "bus", bs.path, "board", d.board.addr, "lock", d.lock, "err", err)
		// Only a lost adapter counts here: the board may have released the
		// lock, so its doors must not turn fault for this (the controller
		// would end the cycle of a door that is opening); the polls say
		// whether the board answers, and the sensor whether the door opened.
		var xe *exchangeError
		if !errors.As(err, &xe) || xe.kind == kindUnplugged {
			bs.failed(d.board, err)
		} else {
			bs.errs[xe.kind].Inc()
		}
		return
	}
	// Door truth: the board's acknowledgement is not an opening; the
	// polls say when the door is open, or that it never opened.
	d.pending, d.since = true, time.Now()
}

// sendUnlock sends the unlock, once more if its answer is lost or damaged
// (the adapter gone aside): a second pulse of a released lock does no harm,
// and one garbled reply must not keep a door shut.
func (bs *bus) sendUnlock(d *door) error {
	for try := 1; ; try++ {
		bs.sent["unlock"].Inc()
		_, err := bs.exchange(encodeUnlock(d.board.addr, byte(d.lock)), cmdUnlock, d.board, byte(d.lock))
		var xe *exchangeError
		if err == nil || try == 2 || !errors.As(err, &xe) || xe.kind == kindUnplugged {
			return err // failed counts the last error
		}
		bs.errs[xe.kind].Inc()
	}
}

func (bs *bus) poll(bd *board) {
	bs.sent["query"].Inc()
	f, err := bs.exchange(encodeQuery(bd.addr), cmdQuery, bd, 0)
	if err != nil {
		bs.failed(bd, err)
		return
	}
	if bd.faulted {
		bs.faults.Add(-1)
		bs.bank.log.Info("board answers again", "bus", bs.path, "board", bd.addr)
	}
	bd.faulted, bd.reason, bd.failures = false, "", 0
	now := time.Now()
	for _, d := range bd.doors {
		set, ok := bit(f.Status, d.lock)
		if !ok {
			bs.bank.emit(d.n, contract.DoorUnknown, fmt.Sprintf("board %d sent no status bit for lock %d", bd.addr, d.lock))
			continue
		}
		open := set == d.openWhenSet
		if d.pending && open {
			d.pending = false
		}
		if d.jammed {
			if open == d.jamReading {
				continue // still jammed: keep the fault
			}
			d.jammed = false
		}
		if d.pending && now.Sub(d.since) > bs.bank.cfg.JamTimeout {
			d.pending, d.jammed, d.jamReading = false, true, open
			bs.bank.log.Warn("lock accepted the unlock but the door did not open", "door", d.n, "bus", bs.path, "board", bd.addr, "lock", d.lock)
			bs.bank.emit(d.n, contract.DoorFault, fmt.Sprintf("jammed: lock %d of board %d accepted the unlock, the door sensor did not change", d.lock, bd.addr))
			continue
		}
		state := contract.DoorClosed
		if open {
			state = contract.DoorOpen
		}
		bs.bank.emit(d.n, state, "door sensor")
	}
}

// exchangeError is a failed request, of one of the fault kinds.
type exchangeError struct {
	kind string
	err  error
}

func (e *exchangeError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *exchangeError) Unwrap() error { return e.err }

// failed handles a request that got no good answer: a board fault with
// back-off, or the adapter gone.
func (bs *bus) failed(bd *board, err error) {
	var xe *exchangeError
	if !errors.As(err, &xe) || xe.kind == kindUnplugged {
		bs.unplugged(err)
		return
	}
	bs.errs[xe.kind].Inc()
	bd.failures++
	delay := bs.bank.cfg.PollInterval << min(bd.failures-1, 16)
	bd.nextTry = time.Now().Add(min(delay, bs.bank.cfg.MaxBackoff))
	if !bd.faulted && bd.failures < bs.bank.cfg.FaultAfter {
		bs.bank.log.Debug("board reply lost or damaged; retried at the next poll", "bus", bs.path, "board", bd.addr, "err", err, "in_a_row", bd.failures)
		return
	}
	if !bd.faulted {
		bs.bank.log.Warn("board unreachable; retrying with back-off", "bus", bs.path, "board", bd.addr, "err", err)
	}
	bs.fault(bd, err.Error())
}

// exchange sends req and waits for the matching reply of board bd (for an
// unlock, of lock channel lock). Frames of other boards and garbage are
// skipped.
func (bs *bus) exchange(req []byte, cmd byte, bd *board, lock byte) (Frame, error) {
	unplugged := func(err error) error {
		return &exchangeError{kindUnplugged, fmt.Errorf("%s: %w", bs.path, err)}
	}
	if err := bs.port.ResetInputBuffer(); err != nil {
		return Frame{}, unplugged(err)
	}
	start := time.Now()
	if _, err := bs.port.Write(req); err != nil {
		return Frame{}, unplugged(err)
	}
	deadline := start.Add(bs.cfg.ResponseTimeout)
	bs.buf = bs.buf[:0]
	n := statusBytes(bd.channels)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return Frame{}, &exchangeError{kindTimeout, fmt.Errorf("board %d did not answer within %v", bd.addr, bs.cfg.ResponseTimeout)}
		}
		if err := bs.port.SetReadTimeout(left); err != nil {
			return Frame{}, unplugged(err)
		}
		got, err := bs.port.Read(bs.rd)
		if err != nil {
			return Frame{}, unplugged(err)
		}
		bs.buf = append(bs.buf, bs.rd[:got]...)
		for {
			f, skip, err := decodeFrame(bs.buf, n)
			bs.buf = bs.buf[skip:]
			if errors.Is(err, errShort) {
				break
			}
			if errors.Is(err, errChecksum) {
				return Frame{}, &exchangeError{kindChecksum, fmt.Errorf("board %d answered with a bad checksum", bd.addr)}
			}
			if f.Cmd == cmd && f.Board == bd.addr && (cmd != cmdUnlock || f.Lock == lock) {
				bs.latency.UpdateDuration(start)
				return f, nil
			}
		}
	}
}

// String describes the bank for logs.
func (b *Bank) String() string {
	paths := make([]string, 0, len(b.buses))
	for _, bs := range b.buses {
		paths = append(paths, bs.path)
	}
	return fmt.Sprintf("kerong bank of %d doors on %s", len(b.doors), strings.Join(paths, ", "))
}
