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
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
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
	w.states[door] = st
	w.mu.Unlock()
	w.changed()
}

func (w *Web) onEvent(m contract.Message) {
	var ev contract.Event
	if json.Unmarshal(m.Payload, &ev) != nil {
		return
	}
	w.mu.Lock()
	w.last = &ev
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
		if st, ok := w.states[s.Doors[i].ID]; ok {
			s.Doors[i].State, s.Doors[i].Reason = st.State, st.Reason
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

// events streams the locker's state as server-sent events: one "state" event
// at once, then one at every change.
func (w *Web) events(rw http.ResponseWriter, r *http.Request) {
	ch := make(chan []byte, 1)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		http.Error(rw, "the locker is stopping", http.StatusServiceUnavailable)
		return
	}
	w.clients[ch] = struct{}{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.clients, ch)
		w.mu.Unlock()
	}()
	// Registered first, so no change between this read and the next
	// broadcast can be missed.
	first, err := w.state()
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rc := http.NewResponseController(rw)
	h := rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	rw.WriteHeader(http.StatusOK)
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
