package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// State is what the locker page shows, sent as JSON on /events.
type State struct {
	LockerID string `json:"locker_id"`
	Version  string `json:"version"`
	Dev      bool   `json:"dev"`
	UptimeS  int64  `json:"uptime_s"`
	Clients  *int64 `json:"clients,omitempty"` // nil when unknown
	Bridge   string `json:"bridge"`            // "up", "down" or "none"
	Outbox   int    `json:"outbox"`            // upstream messages not yet acknowledged by the cloud
	// CanClose says whether a click closes an open door (simulated doors).
	CanClose  bool            `json:"can_close"`
	Doors     []DoorView      `json:"doors"`
	LastEvent *contract.Event `json:"last_event,omitempty"`
}

// DoorView is one door's tile.
type DoorView struct {
	ID       int    `json:"id"`
	Size     string `json:"size,omitempty"`
	Partner  string `json:"partner,omitempty"`
	Disabled bool   `json:"disabled,omitempty"`
	// State is open, closed, fault, or unknown before the door reported.
	// It is fault as well, with the reason of the locker's door.fault event,
	// while a fault the door itself does not report stands (see onEvent).
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Reported is what the door itself last reported when State shows a
	// fault that the door does not (closed, say, for a jammed lock).
	Reported string `json:"reported,omitempty"`
	// Reservation is the door's active reservation (arriving: a parcel is
	// expected; stored: a parcel is inside), or nil when the door is free.
	Reservation *ReservationView `json:"reservation,omitempty"`
}

// ReservationView is the part of a reservation a tile shows.
type ReservationView struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Test   bool   `json:"test,omitempty"` // made by the test helper
}

// stateUnknown is a door's state before it reported one.
const stateUnknown = "unknown"

func (w *Web) onDoorState(m contract.Message) {
	door, err := contract.DoorFromTopic(m.Topic, "state")
	if err != nil {
		return
	}
	st, err := contract.DecodeDoorState(m.Payload)
	if err != nil {
		w.log.Warn("ignoring a door state the page cannot read", "topic", m.Topic, "err", err)
		return
	}
	w.mu.Lock()
	prev, had := w.states[door]
	w.states[door] = st
	// A fault stands until the door reports a normal state (open or closed;
	// unknown says nothing) other than the one it reported before (see
	// onEvent).
	normal := st.State == contract.DoorOpen || st.State == contract.DoorClosed
	if normal && (!had || st.State != prev.State) {
		delete(w.faults, door)
	}
	w.mu.Unlock()
	w.changed()
}

// onEvent keeps the last upstream event, and the faults of the doors.
//
// A door that did not open on command often reports nothing at all: a
// jammed lock keeps its sensor shut, a silent board answers no command. The
// controller then publishes door.fault (and answers door_fault on the
// screen) while the door's retained state still says closed, so the page
// could show nothing. The page holds such a door at fault, with the event's
// reason, until the door shows it works again, which is what an operator
// looking for the door to fix expects:
//
//   - the door reports a normal state other than its previous report (it
//     opened; or a board that reported fault, or had not reported yet,
//     reports closed: it recovered), or
//   - a cycle on it completes (door.closed, or the reservation event of a
//     closing: stored, delivered, reopened, returned).
//
// A report that repeats the door's state (a board republishing "closed",
// someone pushing the shut door) does not clear it: it says nothing of the
// lock that failed. A door that reports fault itself shows its own state
// and reason; the fault then clears when it reports a normal state. The
// faults live in memory only: a restart forgets them, as it forgets the
// last event.
func (w *Web) onEvent(m contract.Message) {
	var ev contract.Event
	if json.Unmarshal(m.Payload, &ev) != nil {
		return
	}
	w.mu.Lock()
	w.last = &ev
	if ev.Door > 0 && ev.Door <= contract.MaxDoor {
		switch ev.Type {
		case contract.EventDoorFault:
			reason := ev.Reason
			if reason == "" {
				reason = "the locker reported a door fault"
			}
			w.faults[ev.Door] = reason
		case contract.EventDoorClosed, contract.EventStored, contract.EventDelivered,
			contract.EventReopened, contract.EventReturned:
			delete(w.faults, ev.Door)
		}
	}
	w.mu.Unlock()
	w.changed()
}

func (w *Web) onAck(m contract.Message) {
	var a contract.Ack
	if json.Unmarshal(m.Payload, &a) != nil {
		return
	}
	w.acks.Answer(a.MsgID, a)
	w.changed() // a downstream message changed the store
}

// changed asks the refresh goroutine for a new state. It never blocks: the
// broker calls it on the publisher's goroutine.
func (w *Web) changed() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// refreshLoop builds the state when something changed (at most one build in
// flight, so a burst of messages costs one store read) or when the status
// figures are due, and sends it to the open pages when it differs.
func (w *Web) refreshLoop() {
	defer w.wg.Done()
	t := time.NewTicker(w.cfg.StatusEvery)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-w.dirty:
		case <-t.C:
		}
		w.mu.Lock()
		idle := len(w.clients) == 0
		w.mu.Unlock()
		if idle {
			continue
		}
		b, err := w.state()
		if err != nil {
			w.log.Warn("cannot build the locker page's state", "err", err)
			continue
		}
		w.broadcast(b)
	}
}

// state builds the locker's state as JSON.
func (w *Web) state() ([]byte, error) {
	doors, err := w.cfg.Store.Doors()
	if err != nil {
		return nil, fmt.Errorf("cannot read the doors: %w", err)
	}
	s := State{
		LockerID: w.cfg.LockerID, Version: w.cfg.Version, Dev: w.cfg.Dev,
		UptimeS: int64(time.Since(w.cfg.Started) / time.Second), Bridge: "none",
		CanClose: w.cfg.CloseDoor != nil, Doors: make([]DoorView, 0, len(doors)),
	}
	if w.cfg.Clients != nil {
		n := w.cfg.Clients()
		s.Clients = &n
	}
	if w.cfg.BridgeUp != nil {
		s.Bridge = "down"
		if w.cfg.BridgeUp() {
			s.Bridge = "up"
		}
	}
	depth, err := w.cfg.Store.OutboxDepth()
	if err != nil {
		return nil, fmt.Errorf("cannot read the outbox: %w", err)
	}
	s.Outbox = depth
	for _, d := range doors {
		v := DoorView{ID: d.ID, Size: d.Size, Partner: d.Partner, Disabled: d.Disabled, State: stateUnknown}
		r, err := w.cfg.Store.ActiveReservation(d.ID)
		if err != nil {
			return nil, fmt.Errorf("cannot read door %d's reservation: %w", d.ID, err)
		}
		if r != nil {
			v.Reservation = &ReservationView{ID: r.ID, Status: r.Status, Test: strings.HasPrefix(r.ID, TestPrefix)}
		}
		s.Doors = append(s.Doors, v)
	}
	sort.Slice(s.Doors, func(i, j int) bool { return s.Doors[i].ID < s.Doors[j].ID })
	w.mu.Lock()
	for i := range s.Doors {
		d := &s.Doors[i]
		if st, ok := w.states[d.ID]; ok {
			d.State, d.Reason = st.State, st.Reason
		}
		if reason, ok := w.faults[d.ID]; ok && d.State != contract.DoorFault {
			d.Reported, d.State, d.Reason = d.State, contract.DoorFault, reason
		}
	}
	s.LastEvent = w.last
	w.mu.Unlock()
	return json.Marshal(s)
}

// broadcast hands b to every open page. A page that has not taken the
// previous state yet gets this one instead: only the latest state matters.
func (w *Web) broadcast(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.clients {
		select {
		case <-ch:
		default:
		}
		ch <- b
	}
}

// keepAlive is how often an idle event stream gets a comment line, so that
// proxies and the browser keep it open.
const keepAlive = 25 * time.Second

// retryAfter is the reconnection time the event stream asks of the browser.
const retryAfter = 250 * time.Millisecond

// events streams the locker's state as server-sent events: one "state" event
// at once, then one at every change.
func (w *Web) events(rw http.ResponseWriter, r *http.Request) {
	ch, ok := w.register()
	if !ok {
		http.Error(rw, "the locker is stopping", http.StatusServiceUnavailable)
		return
	}
	defer w.unregister(ch)
	// Registered first, so no change between this read and the next
	// broadcast can be missed.
	first, err := w.state()
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	h := rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	rw.WriteHeader(http.StatusOK)
	w.stream(rw, r, ch, first)
}

// register adds a page's channel for broadcast; it reports false, adding
// nothing, once the Web is closed.
func (w *Web) register() (chan []byte, bool) {
	ch := make(chan []byte, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, false
	}
	w.clients[ch] = struct{}{}
	return ch, true
}

// unregister removes a page's channel that register added.
func (w *Web) unregister(ch chan []byte) {
	w.mu.Lock()
	delete(w.clients, ch)
	w.mu.Unlock()
}

// stream writes first, then each state received on ch that differs from the
// one sent before, with a keep-alive comment when idle, until the page goes,
// a write fails or the Web closes.
func (w *Web) stream(rw http.ResponseWriter, r *http.Request, ch <-chan []byte, first []byte) {
	rc := http.NewResponseController(rw)
	var sent []byte
	send := func(b []byte) error {
		if bytes.Equal(b, sent) {
			return nil
		}
		sent = b
		if _, err := fmt.Fprintf(rw, "event: state\ndata: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	// A page whose stream ends (the gateway restarting or upgraded in
	// place) reconnects after retryAfter, not after the browser's default
	// of seconds.
	if _, err := fmt.Fprintf(rw, "retry: %d\n\n", retryAfter.Milliseconds()); err != nil {
		return
	}
	if err := send(first); err != nil {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-w.done:
			return
		case b := <-ch:
			if err := send(b); err != nil {
				return
			}
		case <-tick.C:
			if _, err := rw.Write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}
