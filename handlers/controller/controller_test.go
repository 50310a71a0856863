package controller

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/store/storetest"
)

func TestJudge(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	grace := 10 * time.Minute
	own := func(kind string) *store.Cycle { return &store.Cycle{Door: 4, Reservation: "R1", Kind: kind} }
	f := func(status, kind string, usedAgo time.Duration, expiresIn time.Duration, last *store.Cycle, want Verdict) {
		t.Helper()
		r := &store.Reservation{ID: "R1", Door: 4, Status: status, Codes: map[string]*store.Code{
			contract.KindDeposit: {}, contract.KindPickup: {}, contract.KindCourier: {}}}
		if usedAgo != 0 {
			r.Codes[kind].UsedAt = now.Add(-usedAgo)
		}
		if expiresIn != 0 {
			r.ExpiresAt = now.Add(expiresIn)
		}
		if got := Judge(r, kind, now, grace, last); got != want {
			t.Errorf("Judge(%s, %s, used %s ago, expires in %s, last cycle %+v) = %d; want %d", status, kind, usedAgo, expiresIn, last, got, want)
		}
	}
	f(contract.StatusArriving, contract.KindDeposit, 0, 0, nil, Open)
	f(contract.StatusArriving, contract.KindPickup, 0, 0, nil, Refuse)
	f(contract.StatusArriving, contract.KindCourier, 0, 0, nil, Refuse)
	f(contract.StatusStored, contract.KindDeposit, time.Minute, 0, own(contract.KindDeposit), Open) // grace: undo a mistake
	f(contract.StatusStored, contract.KindDeposit, 11*time.Minute, 0, own(contract.KindDeposit), Refuse)
	f(contract.StatusStored, contract.KindPickup, 0, 0, nil, Open)
	f(contract.StatusStored, contract.KindPickup, 0, time.Hour, nil, Open)
	f(contract.StatusStored, contract.KindPickup, 0, -time.Second, nil, Expired)
	f(contract.StatusStored, contract.KindCourier, 0, 0, nil, Open)
	f(contract.StatusStored, contract.KindCourier, 0, -time.Hour, nil, Open) // returns the parcel
	f(contract.StatusDelivered, contract.KindPickup, 9*time.Minute, 0, own(contract.KindPickup), Open)
	f(contract.StatusDelivered, contract.KindPickup, 10*time.Minute, 0, own(contract.KindPickup), Refuse)
	f(contract.StatusDelivered, contract.KindCourier, 0, 0, nil, Refuse)
	f(contract.StatusCancelled, contract.KindDeposit, 0, 0, nil, Refuse)
	f(contract.StatusReturned, contract.KindCourier, 20*time.Minute, 0, own(contract.KindCourier), Refuse)
	// A used code reopens only the door's last cycle if it was its own.
	f(contract.StatusDelivered, contract.KindPickup, time.Minute, 0, nil, Refuse)
	f(contract.StatusDelivered, contract.KindPickup, time.Minute, 0, &store.Cycle{Door: 4, Reservation: "R2", Kind: contract.KindDeposit}, Refuse)
	f(contract.StatusDelivered, contract.KindPickup, time.Minute, 0, &store.Cycle{Door: 4, Kind: store.KindSupport}, Refuse)
	f(contract.StatusDelivered, contract.KindDeposit, 2*time.Minute, 0, own(contract.KindPickup), Refuse) // the courier after the customer
	f(contract.StatusDelivered, contract.KindPickup, time.Minute, 0, &store.Cycle{Door: 5, Reservation: "R1", Kind: contract.KindPickup}, Refuse)
	// No clock step revives a code: used "in the future" is not within grace.
	f(contract.StatusDelivered, contract.KindPickup, -time.Second, 0, own(contract.KindPickup), Refuse)
	f(contract.StatusDelivered, contract.KindPickup, -365*24*time.Hour, 0, own(contract.KindPickup), Refuse)
}

func TestClose(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	f := func(status, kind string, used bool, expired bool, want store.Transition, occupied ...bool) {
		t.Helper()
		var occ *bool // the door has no occupancy sensor
		if len(occupied) == 1 {
			occ = &occupied[0]
		}
		r := &store.Reservation{Status: status, Codes: map[string]*store.Code{kind: {}}}
		if used {
			r.Codes[kind].UsedAt = now.Add(-time.Minute)
		}
		if expired {
			r.ExpiresAt = now.Add(-time.Hour)
		}
		if got := Close(store.Cycle{Kind: kind}, r, now, occ); got != want {
			t.Errorf("Close(%s, %s, used=%v, expired=%v, occupied=%v) = %+v; want %+v", status, kind, used, expired, occupied, got, want)
		}
	}
	reopened := store.Transition{EventType: contract.EventReopened}
	f(contract.StatusArriving, contract.KindDeposit, false, false, store.Transition{Status: contract.StatusStored, EventType: contract.EventStored})
	f(contract.StatusStored, contract.KindPickup, false, false, store.Transition{Status: contract.StatusDelivered, EventType: contract.EventDelivered})
	f(contract.StatusStored, contract.KindCourier, false, true, store.Transition{Status: contract.StatusReturned, EventType: contract.EventReturned})
	f(contract.StatusStored, contract.KindCourier, false, false, reopened)
	f(contract.StatusStored, contract.KindDeposit, true, false, reopened)
	f(contract.StatusDelivered, contract.KindPickup, true, false, reopened)
	// With an occupancy sensor.
	f(contract.StatusArriving, contract.KindDeposit, false, false, store.Transition{Status: contract.StatusStored, EventType: contract.EventStored}, true)
	f(contract.StatusArriving, contract.KindDeposit, false, false, store.Transition{EventType: contract.EventEmptyAfterDeposit, Unused: true}, false)
	f(contract.StatusStored, contract.KindPickup, false, false, store.Transition{Status: contract.StatusDelivered, EventType: contract.EventDelivered}, false)
	f(contract.StatusStored, contract.KindPickup, false, false,
		store.Transition{Status: contract.StatusDelivered, EventType: contract.EventDelivered, Also: contract.EventOccupiedAfterPickup}, true)
}

// TestOccupancyAtTheClosing: a deposit whose door closes empty stores
// nothing and keeps its code for the courier's next try; a pickup that
// leaves the parcel in is delivered and said to support.
func TestOccupancyAtTheClosing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		state := func(door int, st string, occupied bool) {
			_ = r.b.deliver(r.t, contract.TopicDoorStates, contract.DoorStateTopic(door),
				fmt.Sprintf(`{"state":%q,"occupied":%v}`, st, occupied))
			synctest.Wait()
		}
		r.code("1111")
		state(2, "open", false)
		state(2, "closed", false) // the courier did not put the parcel in
		if e := r.lastEvent(); e != contract.EventEmptyAfterDeposit {
			t.Fatalf("event %q after an empty deposit; want %s", e, contract.EventEmptyAfterDeposit)
		}
		if res, err := r.st.Reservation("R1"); err != nil || res.Status != contract.StatusArriving {
			t.Fatalf("R1 after an empty deposit: %+v, %v; want arriving", res, err)
		}
		commands := func() (n int) {
			r.b.mu.Lock()
			defer r.b.mu.Unlock()
			for _, m := range r.b.msgs {
				if m.Topic == contract.DoorCommandTopic(2) {
					n++
				}
			}
			return n
		}
		before := commands()
		if d := r.code("1111"); d.Result == contract.ResultInvalidCode || commands() != before+1 {
			t.Fatalf("the deposit code after an empty deposit: %+v, %d door commands; want it to open the door again", d, commands()-before)
		}
		state(2, "open", false)
		state(2, "closed", true)
		if e := r.lastEvent(); e != contract.EventStored {
			t.Fatalf("event %q after the parcel went in; want stored", e)
		}
		r.code("2222")
		state(2, "open", true)
		state(2, "closed", true) // the customer left the parcel in
		ev := r.events()
		if n := len(ev); n < 2 || ev[n-2].Type != contract.EventDelivered || ev[n-1].Type != contract.EventOccupiedAfterPickup || ev[n-1].Reservation != "R1" {
			t.Fatalf("events %+v; want reservation.delivered then door.occupied_after_pickup of R1", ev)
		}
	})
}

func TestLockoutDoublesUpToTheMaximum(t *testing.T) {
	l := lockout{threshold: 5, window: 5 * time.Minute, base: time.Minute, max: time.Hour, resetAfter: 24 * time.Hour}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var got []time.Duration
	for round := 0; round < 8; round++ {
		for i := 0; i < 4; i++ {
			if d := l.fail(now); d != 0 {
				t.Fatalf("round %d: lockout after %d failures; want after 5", round, i+1)
			}
		}
		d := l.fail(now)
		got = append(got, d)
		if l.locked(now) != d {
			t.Fatalf("locked for %s; want %s", l.locked(now), d)
		}
		now = now.Add(d) // the lockout ends; the next attempts come at once
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute,
		32 * time.Minute, time.Hour, time.Hour}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("lockouts %v; want %v", got, want)
		}
	}
	// A day without a wrong code after the last lockout ended starts the
	// doubling again.
	now = now.Add(24 * time.Hour)
	for i := 0; i < 4; i++ {
		l.fail(now)
	}
	if d := l.fail(now); d != time.Minute {
		t.Fatalf("lockout after a day of quiet %s; want the first lockout again, 1m", d)
	}
	// Failures spread wider than the window never lock.
	l = lockout{threshold: 5, window: 5 * time.Minute, base: time.Minute, max: time.Hour, resetAfter: 24 * time.Hour}
	for i := 0; i < 20; i++ {
		if d := l.fail(now.Add(time.Duration(i) * 2 * time.Minute)); d != 0 {
			t.Fatalf("locked out by failures 2 min apart")
		}
	}
}

// recorder is a broker that records what the controller publishes and takes
// its subscriptions, by filter.
type recorder struct {
	mu   sync.Mutex
	msgs []contract.Message
	subs map[string]func(contract.Message) error
}

func (r *recorder) Subscribe(filter string, fn func(contract.Message)) error {
	return r.Handle(filter, func(m contract.Message) error { fn(m); return nil })
}

func (r *recorder) Handle(filter string, fn func(contract.Message) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.subs == nil {
		r.subs = map[string]func(contract.Message) error{}
	}
	r.subs[filter] = fn // a restarted controller replaces the last one's
	return nil
}

// deliver hands a message on topic to the subscription of filter, as the
// broker would; it fails the test if the controller did not subscribe to it.
func (r *recorder) deliver(t *testing.T, filter, topic, payload string) error {
	t.Helper()
	r.mu.Lock()
	fn := r.subs[filter]
	r.mu.Unlock()
	if fn == nil {
		t.Fatalf("the controller did not subscribe to %s", filter)
	}
	return fn(contract.Message{Topic: topic, Payload: []byte(payload)})
}

func (r *recorder) Publish(topic string, payload []byte, _ bool, _ byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, contract.Message{Topic: topic, Payload: payload})
	return nil
}

func (r *recorder) PublishResponse(topic string, correlation, payload []byte) error {
	return r.Publish(topic, payload, false, 1)
}

func (r *recorder) displays() []contract.Display {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []contract.Display
	for _, m := range r.msgs {
		if m.Topic == contract.TopicScreenDisplay {
			var d contract.Display
			_ = json.Unmarshal(m.Payload, &d)
			out = append(out, d)
		}
	}
	return out
}

func (r *recorder) last() contract.Display {
	d := r.displays()
	if len(d) == 0 {
		return contract.Display{}
	}
	return d[len(d)-1]
}

// rig is a controller on a real store with a recording broker, inside a
// synctest bubble so that its timers run on the fake clock.
type rig struct {
	t  *testing.T
	c  *Controller
	st *store.Store
	b  *recorder
}

func newRig(t *testing.T) *rig { return newRigWith(t, nil) }

// newRigWith is newRig with the test's change to the controller's
// configuration (nil: none).
func newRigWith(t *testing.T, change func(*Config)) *rig {
	st := storetest.Open(t, store.Config{Path: filepath.Join(t.TempDir(), "db"), CodeKey: make([]byte, 32)})
	if _, err := st.EnsureDoors(4, "M"); err != nil {
		t.Fatal(err)
	}
	b := &recorder{}
	cfg := Config{Store: st, Broker: b}
	if change != nil {
		change(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rig{t: t, c: c, st: st, b: b}
	msgs, err := st.UpsertReservation(time.Now(), "m-1", contract.Reservation{ID: "R1", Version: 1, Door: 2,
		DepositCode: "1111", PickupCode: "2222", CourierCode: "3333"}, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("upsert: %v %v", msgs, err)
	}
	return r
}

func (r *rig) code(code string) contract.Display {
	r.t.Helper()
	_ = r.b.deliver(r.t, contract.TopicScreenCode, contract.TopicScreenCode, `{"code":"`+code+`","request_id":"x"}`)
	synctest.Wait()
	return r.b.last()
}

func (r *rig) door(door int, state string) {
	_ = r.b.deliver(r.t, contract.TopicDoorStates, contract.DoorStateTopic(door), `{"state":"`+state+`"}`)
	synctest.Wait()
}

func (r *rig) events() []contract.Event {
	msgs, err := r.st.OutboxAfter(0, 1000)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []contract.Event
	for _, m := range msgs {
		if m.Topic == contract.TopicEvents {
			var e contract.Event
			_ = json.Unmarshal(m.Payload, &e)
			out = append(out, e)
		}
	}
	return out
}

func (r *rig) lastEvent() string {
	ev := r.events()
	if len(ev) == 0 {
		return ""
	}
	return ev[len(ev)-1].Type
}

func TestGracePeriodEndsForGood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		if d := r.code("1111"); d.Result != "" {
			t.Fatalf("answer %+v before the door opened; want none yet", d)
		}
		r.door(2, "open")
		if d := r.b.last(); d.Result != contract.ResultOpened {
			t.Fatalf("got %q; want opened", d.Result)
		}
		r.door(2, "closed")
		if e := r.lastEvent(); e != contract.EventStored {
			t.Fatalf("event %q; want stored", e)
		}
		time.Sleep(9 * time.Minute)
		r.code("1111")
		r.door(2, "open")
		r.door(2, "closed")
		if e := r.lastEvent(); e != contract.EventReopened {
			t.Fatalf("event %q within the grace period; want reopened", e)
		}
		time.Sleep(2 * time.Minute) // 11 min after the first use
		if d := r.code("1111"); d.Result != contract.ResultInvalidCode {
			t.Fatalf("deposit code after its grace period: %q; want invalid_code", d.Result)
		}
	})
}

func TestDoorTimeoutIsAFaultAndKeepsTheCode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.code("1111")
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if d := r.b.last(); d.Result != "" {
			t.Fatalf("answer %q after 4 s; want none before the 5 s door timeout", d.Result)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if d := r.b.last(); d.Result != contract.ResultDoorFault || d.Door != 2 {
			t.Fatalf("got %+v; want door_fault for door 2", d)
		}
		if e := r.lastEvent(); e != contract.EventDoorFault {
			t.Fatalf("event %q; want door.fault", e)
		}
		// A late open report is a forced opening now, and the code still works.
		r.door(2, "closed")
		r.code("1111")
		r.door(2, "open")
		if d := r.b.last(); d.Result != contract.ResultOpened {
			t.Fatalf("got %q; want opened: a fault must not consume the code", d.Result)
		}
	})
}

func TestLeftOpenAlarmOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.code("1111")
		r.door(2, "open")
		time.Sleep(119 * time.Second)
		synctest.Wait()
		if e := r.lastEvent(); e == contract.EventLeftOpen {
			t.Fatalf("left-open alarm before 2 min")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if e := r.lastEvent(); e != contract.EventLeftOpen {
			t.Fatalf("event %q after 2 min open; want door.left_open", e)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		n := 0
		for _, e := range r.events() {
			if e.Type == contract.EventLeftOpen {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d left-open events; want 1", n)
		}
	})
}

func TestLockoutEndsAndDoubles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		for i := 0; i < 4; i++ {
			if d := r.code("9999"); d.Result != contract.ResultInvalidCode {
				t.Fatalf("attempt %d: %q; want invalid_code", i+1, d.Result)
			}
		}
		if d := r.code("9999"); d.Result != contract.ResultLockedOut || d.RetryAfterS != 60 {
			t.Fatalf("5th wrong code: %+v; want locked_out for 60 s", d)
		}
		time.Sleep(59 * time.Second)
		if d := r.code("1111"); d.Result != contract.ResultLockedOut || d.RetryAfterS != 1 {
			t.Fatalf("valid code 1 s before the end: %+v; want locked_out, 1 s left", d)
		}
		time.Sleep(time.Second)
		for i := 0; i < 4; i++ {
			r.code("9999")
		}
		if d := r.code("9999"); d.Result != contract.ResultLockedOut || d.RetryAfterS != 120 {
			t.Fatalf("second lockout: %+v; want 120 s", d)
		}
		lockouts := 0
		for _, e := range r.events() {
			if e.Type == contract.EventLockout {
				lockouts++
			}
		}
		if lockouts != 2 {
			t.Fatalf("%d lockout events; want 2", lockouts)
		}
	})
}

func TestForcedOpenOnlyWithoutACommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.code("1111")
		r.door(2, "open")
		r.door(3, "open")
		r.door(3, "open") // repeated report of the same opening
		forced := map[int]int{}
		for _, e := range r.events() {
			if e.Type == contract.EventForcedOpen {
				forced[e.Door]++
			}
		}
		if forced[2] != 0 || forced[3] != 1 {
			t.Fatalf("forced openings %v; want only one, of door 3", forced)
		}
	})
}

// flakyOpen is the real store whose first DoorOpened fails, as a full SD card would.
type flakyOpen struct {
	Store
	failed bool
}

func (f *flakyOpen) DoorOpened(now time.Time, c store.Cycle, ev *contract.Event) ([]store.Message, error) {
	if !f.failed {
		f.failed = true
		return nil, errors.New("disk full")
	}
	return f.Store.DoorOpened(now, c, ev)
}

func TestClosingStillCommitsWhenTheOpeningWasNotPersisted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.restartOn(&flakyOpen{Store: r.st})
		r.code("1111")
		r.door(2, "open")
		r.door(2, "closed")
		if e := r.lastEvent(); e != contract.EventStored {
			t.Fatalf("event %q; want reservation.stored although the opening was not persisted", e)
		}
		got, err := r.st.Reservation("R1")
		if err != nil || got.Status != contract.StatusStored {
			t.Fatalf("R1: %+v %v; want stored", got, err)
		}
	})
}

func TestLockoutSurvivesARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		for i := 0; i < 5; i++ {
			r.code("9999")
		}
		if d := r.b.last(); d.Result != contract.ResultLockedOut {
			t.Fatalf("got %q; want locked_out", d.Result)
		}
		// A power cut: a new controller on the same database.
		r.restart()
		time.Sleep(10 * time.Second)
		if d := r.code("1111"); d.Result != contract.ResultLockedOut || d.RetryAfterS != 50 {
			t.Fatalf("after a restart: %+v; want still locked out for 50 s", d)
		}
		time.Sleep(50 * time.Second)
		for i := 0; i < 5; i++ {
			r.code("9999")
		}
		if d := r.b.last(); d.Result != contract.ResultLockedOut || d.RetryAfterS != 120 {
			t.Fatalf("second lockout after a restart: %+v; want 120 s (the doubling survives too)", d)
		}
	})
}

// fullDisk is the real store whose commits fail with ENOSPC while full is set.
type fullDisk struct {
	Store
	mu      sync.Mutex
	full    bool
	pending map[string]int
}

func (f *fullDisk) set(full bool) { f.mu.Lock(); f.full = full; f.mu.Unlock() }

func (f *fullDisk) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.full {
		return fmt.Errorf("write locky.db: %w", syscall.ENOSPC)
	}
	return nil
}

func (f *fullDisk) CloseCycle(now time.Time, door int, decide func(store.Cycle, *store.Reservation) store.Transition) (*store.Cycle, []store.Message, error) {
	if err := f.fail(); err != nil {
		return nil, nil, err
	}
	return f.Store.CloseCycle(now, door, decide)
}

func (f *fullDisk) AppendEvent(now time.Time, ev contract.Event, a *store.AuditRecord) (contract.Event, []store.Message, error) {
	if err := f.fail(); err != nil {
		return contract.Event{}, nil, err
	}
	return f.Store.AppendEvent(now, ev, a)
}

func (f *fullDisk) SaveLockout(l store.Lockout) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Store.SaveLockout(l)
}

func (f *fullDisk) SetPending(owner string, n int) {
	f.mu.Lock()
	f.pending[owner] = n
	f.mu.Unlock()
	f.Store.SetPending(owner, n)
}

func (f *fullDisk) held() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending["controller"]
}

func TestAClosingThatCannotCommitIsRetriedWithoutTheDoor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		fd := &fullDisk{Store: r.st, pending: map[string]int{}}
		r.restartOn(fd)
		r.code("1111")
		r.door(2, "open")
		fd.set(true)
		r.door(2, "closed")
		if got, _ := r.st.Reservation("R1"); got.Status != contract.StatusArriving {
			t.Fatalf("R1 %q while the disk is full; want arriving", got.Status)
		}
		if n := fd.held(); n != 1 {
			t.Fatalf("%d writes held; want 1 (the closing)", n)
		}
		if d := r.code("1111"); d.Result != contract.ResultBusy || d.Door != 2 {
			t.Fatalf("deposit code while its closing waits: %+v; want busy for door 2", d)
		}
		// Wrong codes meanwhile: their lockout state and event wait too.
		for i := 0; i < 5; i++ {
			r.code("9999")
		}
		if d := r.b.last(); d.Result != contract.ResultLockedOut {
			t.Fatalf("5th wrong code on a full disk: %q; want locked_out", d.Result)
		}
		time.Sleep(time.Minute) // back-off retries, all failing
		synctest.Wait()
		if e := r.lastEvent(); e == contract.EventStored || e == contract.EventLockout {
			t.Fatalf("event %q committed on a full disk", e)
		}
		fd.set(false)
		time.Sleep(5 * time.Second) // the longest back-off
		synctest.Wait()
		if got, _ := r.st.Reservation("R1"); got.Status != contract.StatusStored {
			t.Fatalf("R1 %q once space returned; want stored without the door reporting again", got.Status)
		}
		var types []string
		for _, e := range r.events() {
			types = append(types, e.Type)
		}
		if want := []string{contract.EventStored, contract.EventLockout}; !slices.Equal(types, want) {
			t.Fatalf("events %v; want %v, in the order they happened", types, want)
		}
		if l, err := r.st.Lockout(); err != nil || l.Until.IsZero() {
			t.Fatalf("lockout state %+v %v; want the lockout saved once space returned", l, err)
		}
		if n := fd.held(); n != 0 {
			t.Fatalf("%d writes still held; want 0", n)
		}
		if h := r.st.Health(); h.Degraded {
			t.Fatalf("store health %+v once everything committed; want not degraded", h)
		}
	})
}

// TestAnUnknownDoorStateIsNoNews: a board that cannot read a door's sensor
// reports unknown; an open door cycle neither ends nor faults on it, and the
// closing that follows stores the parcel.
func TestAnUnknownDoorStateIsNoNews(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.code("1111")
		r.door(2, "open")
		r.door(2, contract.DoorUnknown)
		if n := len(r.events()); n != 0 {
			t.Fatalf("%d events after an unknown state of an open door; want none", n)
		}
		r.door(2, "closed")
		if e := r.lastEvent(); e != contract.EventStored {
			t.Fatalf("event %q after the door closed; want stored", e)
		}
	})
}

// TestStopHandlesTheDoorStatesQueued: door states the broker has already
// acknowledged to the board, queued when the controller stops, are handled
// before it stops (the board will not send them again); queued codes are not.
// Each door opened without a command is a forced-open event in the outbox.
func TestStopHandlesTheDoorStatesQueued(t *testing.T) {
	r := newRig(t)
	r.c.mu.Lock()
	cancel := r.c.stop
	r.c.mu.Unlock()
	release := make(chan struct{})
	// Holds the work goroutine, then ends its context as Close does, so that
	// the jobs behind it find the controller stopping.
	if !r.c.do(func() { <-release; cancel() }) {
		t.Fatal("the controller is not running")
	}
	for door := 1; door <= 4; door++ {
		r.c.HandleDoorState(door, []byte(`{"state":"open"}`))
		r.c.HandleDoorState(door, []byte(`{"state":"closed"}`))
		r.c.HandleDoorState(door, []byte(`{"state":"open"}`))
	}
	r.c.HandleCode([]byte(`{"code":"1111","request_id":"late"}`), nil)
	close(release)
	r.c.Close()
	forced := 0
	for _, e := range r.events() {
		if e.Type == contract.EventForcedOpen {
			forced++
		}
	}
	if forced != 8 {
		t.Errorf("%d door.forced_open events after the stop; want 8 (two per door, each queued before it)", forced)
	}
	if n := len(r.b.displays()); n != 0 {
		t.Errorf("%d displays after the stop; want none (the queued code is dropped: no door opens with the broker closed)", n)
	}
}
