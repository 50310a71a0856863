package gateway

import (
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// webStore shows the store to the pages in the contract's types (web.Store),
// without the codes' hashes: the pages never need them.
type webStore struct{ s *store.Store }

func (w webStore) Doors() ([]contract.Door, error) { return w.s.Doors() }

func (w webStore) ActiveReservation(door int) (*contract.Reservation, error) {
	r, err := w.s.ActiveReservation(door)
	if r == nil || err != nil {
		return nil, err
	}
	c := summary(*r)
	return &c, nil
}

func (w webStore) Reservations() ([]contract.Reservation, error) {
	all, err := w.s.Reservations()
	if err != nil {
		return nil, err
	}
	out := make([]contract.Reservation, len(all))
	for i, r := range all {
		out[i] = summary(r)
	}
	return out, nil
}

func (w webStore) OutboxDepth() (int, error) {
	st, err := w.s.OutboxStats()
	return st.Depth, err
}

// summary is r without its codes.
func summary(r store.Reservation) contract.Reservation {
	c := contract.Reservation{ID: r.ID, Version: r.Version, Door: r.Door, Partner: r.Partner, User: r.User, Status: r.Status}
	if !r.ExpiresAt.IsZero() {
		t := r.ExpiresAt
		c.ExpiresAt = &t
	}
	return c
}
