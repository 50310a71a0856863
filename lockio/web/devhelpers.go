package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// TestPrefix starts the id of every reservation the test helper creates; the
// clean-up removes only those.
const TestPrefix = "TEST-"

// TestReservation is a reservation made by the test helper, with its codes in
// plain: the only time they are shown.
type TestReservation struct {
	ID          string `json:"id"`
	Door        int    `json:"door"`
	DepositCode string `json:"deposit_code"`
	PickupCode  string `json:"pickup_code"`
	CourierCode string `json:"courier_code"`
}

// errNoAck is returned when the store handler did not answer in time.
var errNoAck = errors.New("no ack from the locker's store in time; is the gateway stopping?")

// createTestReservation publishes an arriving reservation for a free door on
// locky/down/reservations, as the back-end would, and answers with its codes
// once the store has acknowledged it: POST /api/test/reservations {"door":7}.
func (w *Web) createTestReservation(rw http.ResponseWriter, r *http.Request) {
	var req struct {
		Door int `json:"door"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 4096))
	if err == nil && len(strings.TrimSpace(string(body))) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil || req.Door <= 0 || req.Door > contract.MaxDoor {
		http.Error(rw, `want {"door":7}: the number of a free door`, http.StatusBadRequest)
		return
	}
	codes, err := distinctCodes(3, 6)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	tr := TestReservation{ID: TestPrefix + randomHex(4), Door: req.Door,
		DepositCode: codes[0], PickupCode: codes[1], CourierCode: codes[2]}
	a, err := w.down(r.Context(), contract.EntityReservations, contract.DownMessage{Op: contract.OpUpsert,
		Reservation: &contract.Reservation{ID: tr.ID, Version: 1, Door: tr.Door, User: "test", Status: contract.StatusArriving,
			DepositCode: tr.DepositCode, PickupCode: tr.PickupCode, CourierCode: tr.CourierCode}})
	switch {
	case err != nil:
		http.Error(rw, err.Error(), http.StatusGatewayTimeout)
	case !a.OK:
		http.Error(rw, "the locker refused it: "+a.Error, http.StatusConflict)
	default:
		w.log.Info("created a test reservation", "reservation", tr.ID, "door", tr.Door)
		writeJSON(rw, http.StatusCreated, tr)
	}
}

// CleanupResult says what the clean-up removed and what it kept, and why.
type CleanupResult struct {
	Deleted []string          `json:"deleted"`
	Kept    map[string]string `json:"kept,omitempty"` // id → reason
}

// cleanupTestData deletes, through locky/down/reservations, every test
// reservation that holds no parcel: POST /api/test/cleanup.
func (w *Web) cleanupTestData(rw http.ResponseWriter, r *http.Request) {
	all, err := w.cfg.Store.Reservations()
	if err != nil {
		http.Error(rw, fmt.Sprintf("cannot read the reservations: %v", err), http.StatusInternalServerError)
		return
	}
	res := CleanupResult{Deleted: []string{}, Kept: map[string]string{}}
	for _, rv := range all {
		if !strings.HasPrefix(rv.ID, TestPrefix) {
			continue
		}
		if rv.Status == contract.StatusStored {
			res.Kept[rv.ID] = fmt.Sprintf("its parcel is in door %d", rv.Door)
			continue
		}
		a, err := w.down(r.Context(), contract.EntityReservations, contract.DownMessage{Op: contract.OpDelete,
			Reservation: &contract.Reservation{ID: rv.ID}})
		switch {
		case err != nil:
			http.Error(rw, err.Error(), http.StatusGatewayTimeout)
			return
		case !a.OK:
			res.Kept[rv.ID] = a.Error
		default:
			res.Deleted = append(res.Deleted, rv.ID)
		}
	}
	w.log.Info("removed test reservations", "deleted", len(res.Deleted), "kept", len(res.Kept))
	writeJSON(rw, http.StatusOK, res)
}

// down publishes a downstream message with a fresh msg_id and waits for its ack.
func (w *Web) down(ctx context.Context, entity string, m contract.DownMessage) (contract.Ack, error) {
	m.MsgID = "web-" + randomHex(8)
	payload, err := json.Marshal(m)
	if err != nil {
		return contract.Ack{}, err
	}
	ch, done := w.acks.Expect(m.MsgID)
	defer done()
	if err := w.cfg.Broker.Publish(contract.TopicDownPrefix+entity, payload, false, 1); err != nil {
		return contract.Ack{}, fmt.Errorf("cannot publish on %s%s: %w", contract.TopicDownPrefix, entity, err)
	}
	t := time.NewTimer(w.cfg.AckTimeout)
	defer t.Stop()
	select {
	case a := <-ch:
		return a, nil
	case <-t.C:
		return contract.Ack{}, errNoAck
	case <-ctx.Done():
		return contract.Ack{}, ctx.Err()
	case <-w.done:
		return contract.Ack{}, errNoAck
	}
}

// distinctCodes returns n different random codes of the given number of digits.
func distinctCodes(n, digits int) ([]string, error) {
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits)), nil)
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		v, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("cannot draw a random code: %w", err)
		}
		c := fmt.Sprintf("%0*d", digits, v)
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return strings.ToUpper(hex.EncodeToString(b))
}
