// Package storehandler applies the back-end's downstream messages
// (locky/down/reservations|doors|partners|users|sync|audit) to the store:
// each is validated whole, applied atomically with its ack, version-ordered
// and idempotent, and answered with exactly one ack on locky/up/acks. A sync
// is answered with a snapshot on locky/up/snapshot and an audit request with
// a page of the audit trail on locky/up/audit, each committed with its ack.
//
// A message is handled on the publisher's goroutine, so a publisher that waits
// for Publish to return (the bridge) knows the message is committed.
package storehandler

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/store"
	"github.com/locky-edge/locky/handlers/contract"
)

// Store is what the handler needs of the store.
type Store interface {
	UpsertReservation(now time.Time, msgID string, r contract.Reservation, grace time.Duration) ([]store.Message, error)
	DeleteReservation(now time.Time, msgID, id string) ([]store.Message, error)
	UpsertDoor(now time.Time, msgID string, d contract.Door) ([]store.Message, error)
	DeleteDoor(now time.Time, msgID string, door int) ([]store.Message, error)
	UpsertPartner(now time.Time, msgID string, p contract.Partner) ([]store.Message, error)
	DeletePartner(now time.Time, msgID, id string) ([]store.Message, error)
	UpsertUser(now time.Time, msgID string, u contract.User) ([]store.Message, error)
	DeleteUser(now time.Time, msgID, id string) ([]store.Message, error)
	Snapshot(now time.Time, msgID string) ([]store.Message, error)
	AuditReply(now time.Time, req contract.AuditRequest) ([]store.Message, error)
	Ack(now time.Time, msgID string, err error) ([]store.Message, error)
}

// Config configures a Handler.
type Config struct {
	Store Store // required
	// Grace is the codes' grace period, which decides whether a code of an
	// old reservation may be reused. Zero means 10 min.
	Grace   time.Duration
	Metrics *metrics.Set // nil means a private set
	Logger  *slog.Logger // nil means slog.Default()
}

// Handler handles downstream messages.
type Handler struct {
	cfg      Config
	log      *slog.Logger
	accepted *metrics.Counter
	rejected *metrics.Counter
	failed   *metrics.Counter
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("storehandler: Store is required")
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	return &Handler{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "storehandler"),
		accepted: cfg.Metrics.GetOrCreateCounter(`locky_store_downstream_messages_total{result="accepted"}`),
		rejected: cfg.Metrics.GetOrCreateCounter(`locky_store_downstream_messages_total{result="rejected"}`),
		failed:   cfg.Metrics.GetOrCreateCounter(`locky_store_downstream_messages_total{result="failed"}`),
	}, nil
}

// Handle applies one message of locky/down/{entity}. It returns an error only
// when the store failed and nothing was acked: the message should then be
// redelivered.
func (h *Handler) Handle(m contract.Message) error {
	entity := strings.TrimPrefix(m.Topic, contract.TopicDownPrefix)
	now := time.Now()
	msgs, err := h.apply(now, entity, m.Payload)
	if err != nil {
		h.failed.Inc()
		h.log.Error("cannot apply a downstream message; it is not acked and will be redelivered", "topic", m.Topic, "err", err)
		return err
	}
	for _, a := range msgs {
		var ack contract.Ack
		if a.Topic == contract.TopicAcks && json.Unmarshal(a.Payload, &ack) == nil && !ack.OK {
			h.rejected.Inc()
			h.log.Info("rejected a downstream message", "topic", m.Topic, "msg_id", ack.MsgID, "error", ack.Error)
			return nil
		}
	}
	h.accepted.Inc()
	return nil
}

func (h *Handler) apply(now time.Time, entity string, payload []byte) ([]store.Message, error) {
	st := h.cfg.Store
	switch entity {
	case "sync":
		req, err := contract.DecodeSync(payload)
		if err != nil {
			return st.Ack(now, contract.MsgIDOf(payload), err)
		}
		return st.Snapshot(now, req.MsgID)
	case "audit":
		req, err := contract.DecodeAudit(payload)
		if err != nil {
			return st.Ack(now, contract.MsgIDOf(payload), err)
		}
		return st.AuditReply(now, req)
	}
	m, err := contract.DecodeDown(entity, payload)
	if err != nil {
		return st.Ack(now, contract.MsgIDOf(payload), err)
	}
	del := m.Op == contract.OpDelete
	switch {
	case m.Reservation != nil && del:
		return st.DeleteReservation(now, m.MsgID, m.Reservation.ID)
	case m.Reservation != nil:
		return st.UpsertReservation(now, m.MsgID, *m.Reservation, h.cfg.Grace)
	case m.Door != nil && del:
		return st.DeleteDoor(now, m.MsgID, m.Door.ID)
	case m.Door != nil:
		return st.UpsertDoor(now, m.MsgID, *m.Door)
	case m.Partner != nil && del:
		return st.DeletePartner(now, m.MsgID, m.Partner.ID)
	case m.Partner != nil:
		return st.UpsertPartner(now, m.MsgID, *m.Partner)
	case m.User != nil && del:
		return st.DeleteUser(now, m.MsgID, m.User.ID)
	case m.User != nil:
		return st.UpsertUser(now, m.MsgID, *m.User)
	}
	return nil, fmt.Errorf("storehandler: decoded %s message carries no entity", entity)
}
