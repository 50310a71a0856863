package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/web"
)

// fakeStore is a locker of doors 1..n with the given active reservations.
type fakeStore struct {
	mu           sync.Mutex
	doors        []contract.Door
	reservations map[int]*contract.ReservationState // by door
}

func newFakeStore(n int) *fakeStore {
	s := &fakeStore{reservations: map[int]*contract.ReservationState{}}
	for i := 1; i <= n; i++ {
		s.doors = append(s.doors, contract.Door{ID: i, Size: "M"})
	}
	return s
}

func (s *fakeStore) Doors() ([]contract.Door, error) { return s.doors, nil }

func (s *fakeStore) ActiveReservation(door int) (*contract.ReservationState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reservations[door], nil
}

func (s *fakeStore) Reservations() ([]contract.ReservationState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []contract.ReservationState
	for _, r := range s.reservations {
		out = append(out, *r)
	}
	return out, nil
}

func (s *fakeStore) OutboxDepth() (int, error) { return 3, nil }

// fakeBroker delivers published messages to its subscribers, and answers a
// downstream reservation message with the ack that refuse returns.
type fakeBroker struct {
	mu     sync.Mutex
	subs   map[string][]func(contract.Message)
	refuse func(contract.DownMessage) string // "" acks ok; nil means no ack at all
	down   []contract.DownMessage
}

func newFakeBroker() *fakeBroker { return &fakeBroker{subs: map[string][]func(contract.Message){}} }

func (b *fakeBroker) Subscribe(filter string, fn func(contract.Message)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[filter] = append(b.subs[filter], fn)
	return nil
}

func (b *fakeBroker) Publish(topic string, payload []byte, _ bool, _ byte) error {
	if topic != contract.TopicDownPrefix+contract.EntityReservations {
		return nil
	}
	m, err := contract.DecodeDown(contract.EntityReservations, payload)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.down = append(b.down, m)
	refuse := b.refuse
	b.mu.Unlock()
	if refuse == nil {
		return nil
	}
	ack := contract.Ack{MsgID: m.MsgID, OK: true}
	if e := refuse(m); e != "" {
		ack = contract.Ack{MsgID: m.MsgID, Error: e}
	}
	b.deliver(contract.TopicAcks, ack)
	return nil
}

// deliver calls the subscribers of filter with v as JSON.
func (b *fakeBroker) deliver(topic string, v any) {
	payload, _ := json.Marshal(v)
	filter := topic
	if d, err := contract.DoorFromTopic(topic, "state"); err == nil && d > 0 {
		filter = contract.TopicDoorStates
	}
	b.mu.Lock()
	subs := b.subs[filter]
	b.mu.Unlock()
	for _, fn := range subs {
		fn(contract.Message{Topic: topic, Payload: payload})
	}
}

func noSubmit(context.Context, string) (contract.Display, error) {
	return contract.Display{}, errors.New("not used")
}

// newSite serves a Web built from cfg (Store, Broker and Submit filled in
// when empty) until the test ends.
func newSite(t *testing.T, cfg web.Config) (*web.Web, *httptest.Server) {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = newFakeStore(4)
	}
	if cfg.Broker == nil {
		cfg.Broker = newFakeBroker()
	}
	if cfg.Submit == nil {
		cfg.Submit = noSubmit
	}
	cfg.Logger = testLogger(t)
	w, err := web.New(cfg)
	if err != nil {
		t.Fatalf("web.New: %v", err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatalf("web.Start: %v", err)
	}
	srv := httptest.NewServer(w.Handler())
	t.Cleanup(func() {
		w.Close()
		srv.Close()
	})
	return w, srv
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	f := func(cfg web.Config, want string) {
		t.Helper()
		_, err := web.New(cfg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v; want an error naming %q", err, want)
		}
	}
	st, b := newFakeStore(1), newFakeBroker()
	f(web.Config{Broker: b, Submit: noSubmit}, "Store")
	f(web.Config{Store: st, Submit: noSubmit}, "Broker")
	f(web.Config{Store: st, Broker: b}, "Submit")
}

func TestRoutes(t *testing.T) {
	f := func(dev bool, method, path string, want int) {
		t.Helper()
		_, srv := newSite(t, web.Config{Dev: dev, CloseDoor: func(int) error { return nil }})
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("dev=%v %s %s: got %d; want %d", dev, method, path, resp.StatusCode, want)
		}
	}
	f(true, "GET", "/", 200)
	f(false, "GET", "/", 200)
	f(false, "GET", "/kiosk", 200)
	f(false, "GET", "/assets/style.css", 200)
	f(false, "GET", "/assets/kiosk.js", 200)
	f(false, "GET", "/assets/locker.html", 404) // templates are not files
	f(false, "GET", "/nothing", 404)
	f(false, "GET", "/api/state", 200)
	// The test helpers exist only in dev mode.
	f(false, "POST", "/api/test/reservations", 404)
	f(false, "POST", "/api/test/cleanup", 404)
	f(true, "POST", "/api/test/reservations", 400) // {} names no door
	f(true, "POST", "/api/test/cleanup", 200)
	f(false, "POST", "/api/doors/x/close", 400)
	f(false, "POST", "/api/doors/2/close", 204)
}

func TestLockerPageHasTestToolsOnlyInDevMode(t *testing.T) {
	f := func(dev bool, want bool) {
		t.Helper()
		_, srv := newSite(t, web.Config{Dev: dev})
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if got := strings.Contains(string(b), `id="test-tools"`); got != want {
			t.Errorf("dev=%v: test tools shown %v; want %v", dev, got, want)
		}
	}
	f(true, true)
	f(false, false)
}

// The kiosk is the customers' screen: only in dev mode does it link to the
// locker page.
func TestKioskLinksToTheLockerPageOnlyInDevMode(t *testing.T) {
	f := func(dev bool, want bool) {
		t.Helper()
		_, srv := newSite(t, web.Config{Dev: dev})
		resp, err := http.Get(srv.URL + "/kiosk")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if got := strings.Contains(string(b), `href="/"`); got != want {
			t.Errorf("dev=%v: link to the locker page %v; want %v", dev, got, want)
		}
	}
	f(true, true)
	f(false, false)
}

func TestCloseDoor(t *testing.T) {
	var closed []int
	_, srv := newSite(t, web.Config{CloseDoor: func(d int) error {
		if d > 4 {
			return errors.New("no such simulated door")
		}
		closed = append(closed, d)
		return nil
	}})
	f := func(path string, want int) {
		t.Helper()
		if got, body := post(t, srv.URL+path, ""); got != want {
			t.Errorf("POST %s: got %d %q; want %d", path, got, body, want)
		}
	}
	f("/api/doors/3/close", 204)
	f("/api/doors/9/close", 404)
	f("/api/doors/0/close", 400)
	if len(closed) != 1 || closed[0] != 3 {
		t.Errorf("closed %v; want [3]", closed)
	}
	_, real := newSite(t, web.Config{})
	if got, _ := post(t, real.URL+"/api/doors/3/close", ""); got != 404 {
		t.Errorf("real doors: got %d; want 404", got)
	}
}

func TestKioskCode(t *testing.T) {
	f := func(submit web.SubmitFunc, wantStatus int, wantBody string) {
		t.Helper()
		_, srv := newSite(t, web.Config{Submit: submit})
		got, body := post(t, srv.URL+"/api/kiosk/code", `{"code":"123456"}`)
		if got != wantStatus || !strings.Contains(body, wantBody) {
			t.Errorf("got %d %q; want %d with %q", got, body, wantStatus, wantBody)
		}
	}
	f(func(_ context.Context, code string) (contract.Display, error) {
		return contract.Display{Result: contract.ResultOpened, Door: 2, Message: "code " + code}, nil
	}, 200, `{"request_id":"","result":"opened","door":2,"message":"code 123456"}`)
	f(func(context.Context, string) (contract.Display, error) {
		return contract.Display{}, errors.New("screen: no answer from the locker")
	}, 504, "no answer")
}

// The kiosk's body is read as the screen's code request is: what two JSON
// parsers could read as two different codes is refused, and never entered.
func TestKioskCodeRefusesAmbiguousBodies(t *testing.T) {
	var submitted []string
	_, srv := newSite(t, web.Config{Submit: func(_ context.Context, code string) (contract.Display, error) {
		submitted = append(submitted, code)
		return contract.Display{Result: contract.ResultInvalidCode}, nil
	}})
	f := func(body string, wantStatus int, wantBody string) {
		t.Helper()
		got, resp := post(t, srv.URL+"/api/kiosk/code", body)
		if got != wantStatus || !strings.Contains(resp, wantBody) {
			t.Errorf("POST %s: got %d %q; want %d with %q", body, got, resp, wantStatus, wantBody)
		}
	}
	f(`{"code":"111111","code":"222222"}`, 400, `duplicate key "code" in the code request`)
	f(`{"code":"111111","Code":"222222"}`, 400, `key "Code" in the code request must be spelled "code"`)
	f(`{"CODE":"111111"}`, 400, `key "CODE" in the code request must be spelled "code"`)
	f(`{"code":"111111","code":"222222"}`, 400, `duplicate key "code"`)
	f(`{"code":"111111","door":7}`, 400, `unknown field "door"`)
	f(`{"code":"111111"} {"code":"222222"}`, 400, "data after the object")
	f(`{"code":"12"}`, 400, "a code is 4 to 12 digits")
	f(`{}`, 400, "code is missing")
	f(``, 400, "payload is empty")
	f(`{"code":"`+strings.Repeat("1", 5000)+`"}`, 413, "the body is over 4096 bytes")
	if len(submitted) != 0 {
		t.Fatalf("entered %q; want no code entered from a refused body", submitted)
	}
	f(`{"code":"111111","request_id":"mine"}`, 200, `"result":"invalid_code"`)
	if len(submitted) != 1 || submitted[0] != "111111" {
		t.Fatalf("entered %q; want 111111 once", submitted)
	}
}

func TestTestReservation(t *testing.T) {
	b := newFakeBroker()
	b.refuse = func(m contract.DownMessage) string {
		if m.Reservation.Door == 2 {
			return "door 2 holds reservation R1: door is occupied"
		}
		return ""
	}
	_, srv := newSite(t, web.Config{Dev: true, Broker: b})
	got, body := post(t, srv.URL+"/api/test/reservations", `{"door":3}`)
	if got != 201 {
		t.Fatalf("got %d %q; want 201", got, body)
	}
	var tr web.TestReservation
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{tr.DepositCode: true, tr.PickupCode: true, tr.CourierCode: true}
	if len(codes) != 3 || tr.Door != 3 || !strings.HasPrefix(tr.ID, web.TestPrefix) {
		t.Errorf("got %+v; want door 3, an id %s…, three different codes", tr, web.TestPrefix)
	}
	for c := range codes {
		if len(c) != 6 || contract.CheckCode(c) != nil {
			t.Errorf("code %q; want 6 digits", c)
		}
	}
	if len(b.down) != 1 || b.down[0].Op != contract.OpUpsert || b.down[0].Reservation.DepositCode != tr.DepositCode ||
		b.down[0].Reservation.Status != contract.StatusArriving {
		t.Errorf("published %+v; want one upsert of an arriving reservation with the deposit code %s", b.down, tr.DepositCode)
	}

	if got, body := post(t, srv.URL+"/api/test/reservations", `{"door":2}`); got != 409 || !strings.Contains(body, "door is occupied") {
		t.Errorf("occupied door: got %d %q; want 409 with the ack's error", got, body)
	}
	b.mu.Lock()
	b.refuse = nil // no ack comes
	b.mu.Unlock()
	_, slow := newSite(t, web.Config{Dev: true, Broker: b, AckTimeout: time.Millisecond})
	if got, body := post(t, slow.URL+"/api/test/reservations", `{"door":3}`); got != 504 || !strings.Contains(body, "no ack") {
		t.Errorf("no ack: got %d %q; want 504", got, body)
	}
}

func TestCleanupDeletesOnlyTestReservationsWithoutAParcel(t *testing.T) {
	st := newFakeStore(4)
	st.reservations[1] = &contract.ReservationState{ID: web.TestPrefix + "A", Door: 1, Status: contract.StatusArriving}
	st.reservations[2] = &contract.ReservationState{ID: web.TestPrefix + "B", Door: 2, Status: contract.StatusStored}
	st.reservations[3] = &contract.ReservationState{ID: "R12", Door: 3, Status: contract.StatusArriving}
	st.reservations[4] = &contract.ReservationState{ID: web.TestPrefix + "C", Door: 4, Status: contract.StatusDelivered}
	b := newFakeBroker()
	b.refuse = func(m contract.DownMessage) string {
		if m.Reservation.ID == web.TestPrefix+"C" {
			return "refused for the test"
		}
		return ""
	}
	_, srv := newSite(t, web.Config{Dev: true, Store: st, Broker: b})
	got, body := post(t, srv.URL+"/api/test/cleanup", "")
	if got != 200 {
		t.Fatalf("got %d %q; want 200", got, body)
	}
	var res web.CleanupResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != 1 || res.Deleted[0] != web.TestPrefix+"A" {
		t.Errorf("deleted %v; want [%sA]", res.Deleted, web.TestPrefix)
	}
	if len(res.Kept) != 2 || !strings.Contains(res.Kept[web.TestPrefix+"B"], "door 2") || res.Kept[web.TestPrefix+"C"] != "refused for the test" {
		t.Errorf("kept %v; want %sB (parcel inside) and %sC (refused)", res.Kept, web.TestPrefix, web.TestPrefix)
	}
	for _, m := range b.down {
		if m.Op != contract.OpDelete || m.Reservation.ID == "R12" || m.Reservation.ID == web.TestPrefix+"B" {
			t.Errorf("published %s of %s; want deletes of test reservations without a parcel only", m.Op, m.Reservation.ID)
		}
	}
}

// stream reads the state events of /events.
type stream struct {
	t    *testing.T
	body io.ReadCloser
	sc   *bufio.Scanner
}

func openStream(t *testing.T, url string) *stream {
	t.Helper()
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q; want text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	// The stream first tells the page to reconnect at once when it ends
	// (a restart, an upgrade), not after the browser's default seconds.
	if !sc.Scan() || sc.Text() != "retry: 250" {
		t.Fatalf("the stream begins with %q, %v; want %q", sc.Text(), sc.Err(), "retry: 250")
	}
	return &stream{t: t, body: resp.Body, sc: sc}
}

// next returns the next state that match accepts.
func (s *stream) next(match func(web.State) bool) web.State {
	s.t.Helper()
	for s.sc.Scan() {
		data, ok := strings.CutPrefix(s.sc.Text(), "data: ")
		if !ok {
			continue
		}
		var st web.State
		if err := json.Unmarshal([]byte(data), &st); err != nil {
			s.t.Fatalf("bad state %q: %v", data, err)
		}
		if match(st) {
			return st
		}
	}
	s.t.Fatalf("the stream ended: %v", s.sc.Err())
	return web.State{}
}

func TestEventsFollowTheBroker(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	st, b := newFakeStore(4), newFakeBroker()
	w, err := web.New(web.Config{Store: st, Broker: b, Submit: noSubmit, LockerID: "L1", Version: "v9",
		Clients: func() int64 { return 5 }, BridgeUp: func() bool { return true }, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	s := openStream(t, srv.URL)

	first := s.next(func(web.State) bool { return true })
	if first.LockerID != "L1" || first.Version != "v9" || first.Bridge != "up" || first.Clients == nil || *first.Clients != 5 ||
		first.Outbox != 3 || len(first.Doors) != 4 || first.Doors[0].State != "unknown" || first.CanClose {
		t.Errorf("first state %+v", first)
	}

	b.deliver(contract.DoorStateTopic(3), contract.DoorState{State: contract.DoorOpen, At: time.Now()})
	s.next(func(st web.State) bool { return st.Doors[2].State == contract.DoorOpen })

	st.mu.Lock()
	st.reservations[3] = &contract.ReservationState{ID: "R12", Door: 3, Status: contract.StatusStored}
	st.mu.Unlock()
	b.deliver(contract.TopicEvents, contract.Event{EventID: "0000000000000007", Type: contract.EventStored, Reservation: "R12", Door: 3})
	got := s.next(func(st web.State) bool { return st.LastEvent != nil })
	if r := got.Doors[2].Reservation; r == nil || r.ID != "R12" || r.Status != contract.StatusStored || r.Test {
		t.Errorf("door 3's reservation %+v; want R12 stored", r)
	}
	if got.LastEvent.Type != contract.EventStored {
		t.Errorf("last event %+v; want %s", got.LastEvent, contract.EventStored)
	}

	// Close ends the open streams, so that the HTTP server can shut down.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, s.body); err != nil {
		t.Errorf("the stream did not end cleanly: %v", err)
	}
	s.body.Close()
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

// A door that did not open on command often reports nothing (a jammed lock
// keeps its sensor shut): the locker's door.fault event alone says so. The
// page shows the door at fault with the event's reason until the door works
// again: a report of another normal state, or a completed cycle. A repeated
// report of the same state proves nothing and leaves the fault shown.
func TestEventsShowADoorFaultUntilTheDoorWorks(t *testing.T) {
	b := newFakeBroker()
	_, srv := newSite(t, web.Config{Broker: b})
	s := openStream(t, srv.URL)
	defer s.body.Close()
	marks := 0
	// f delivers v on topic, then a marker event, and checks door's tile in
	// the first state that shows the marker: everything before it is in.
	f := func(topic string, v any, door int, want web.DoorView) {
		t.Helper()
		b.deliver(topic, v)
		marks++
		mark := fmt.Sprintf("%016d", marks)
		b.deliver(contract.TopicEvents, contract.Event{EventID: mark, Type: contract.EventLockout, At: time.Now()})
		got := s.next(func(st web.State) bool { return st.LastEvent != nil && st.LastEvent.EventID == mark }).Doors[door-1]
		if got.State != want.State || got.Reason != want.Reason || got.Reported != want.Reported {
			t.Errorf("door %d after %s %+v: got state %q reason %q reported %q; want %q %q %q", door, topic, v,
				got.State, got.Reason, got.Reported, want.State, want.Reason, want.Reported)
		}
	}
	state := func(door int) string { return contract.DoorStateTopic(door) }
	report := func(st, reason string) contract.DoorState {
		return contract.DoorState{State: st, Reason: reason, At: time.Now()}
	}
	fault := func(door int, reason string) contract.Event {
		return contract.Event{EventID: "f", Type: contract.EventDoorFault, Door: door, Reason: reason, At: time.Now()}
	}
	const open, closed, faulty = contract.DoorOpen, contract.DoorClosed, contract.DoorFault
	jam := "door 2 did not report open within 5s"

	// A jammed door: closed before, closed after, the event alone tells.
	f(state(2), report(closed, ""), 2, web.DoorView{State: closed})
	f(contract.TopicEvents, fault(2, jam), 2, web.DoorView{State: faulty, Reason: jam, Reported: closed})
	f(state(2), report(closed, "closed"), 2, web.DoorView{State: faulty, Reason: jam, Reported: closed})
	f(state(2), report(open, ""), 2, web.DoorView{State: open})
	f(state(2), report(closed, ""), 2, web.DoorView{State: closed})
	// A fault before the door ever reported: its first report clears it.
	f(contract.TopicEvents, fault(1, "no answer"), 1, web.DoorView{State: faulty, Reason: "no answer", Reported: "unknown"})
	f(state(1), report(closed, ""), 1, web.DoorView{State: closed})
	// A door that reports fault itself shows its own reason; recovering, it
	// reports closed, which clears the locker's event as well.
	f(state(4), report(faulty, "jammed"), 4, web.DoorView{State: faulty, Reason: "jammed"})
	f(contract.TopicEvents, fault(4, "door reported fault: jammed"), 4, web.DoorView{State: faulty, Reason: "jammed"})
	f(state(4), report(closed, ""), 4, web.DoorView{State: closed})
	// A completed cycle clears it too; a fault without a reason still shows one.
	f(state(3), report(open, ""), 3, web.DoorView{State: open})
	f(contract.TopicEvents, fault(3, ""), 3, web.DoorView{State: faulty, Reason: "the locker reported a door fault", Reported: open})
	f(contract.TopicEvents, contract.Event{Type: contract.EventStored, Door: 3, Reservation: "R1"}, 3, web.DoorView{State: open})
	f(contract.TopicEvents, fault(3, "again"), 3, web.DoorView{State: faulty, Reason: "again", Reported: open})
	f(contract.TopicEvents, contract.Event{Type: contract.EventDoorClosed, Door: 3}, 3, web.DoorView{State: open})
}
