package gateway

import (
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// webStore shows the store to the pages (web.Store): reservations as the
// locker reports them, without the codes' hashes, which the pages never need.
type webStore struct{ s *store.Store }

func (w webStore) Doors() ([]contract.Door, error) { return w.s.Doors() }

func (w webStore) ActiveReservation(door int) (*contract.ReservationState, error) {
	r, err := w.s.ActiveReservation(door)
	if r == nil || err != nil {
		return nil, err
	}
	st := r.State()
	return &st, nil
}

func (w webStore) Reservations() ([]contract.ReservationState, error) {
	all, err := w.s.Reservations()
	if err != nil {
		return nil, err
	}
	out := make([]contract.ReservationState, len(all))
	for i, r := range all {
		out[i] = r.State()
	}
	return out, nil
}

func (w webStore) OutboxDepth() (int, error) {
	st, err := w.s.OutboxStats()
	return st.Depth, err
}
