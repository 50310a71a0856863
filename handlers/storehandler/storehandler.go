// Package storehandler applies the back-end's downstream messages
// (locky/down/reservations|doors|partners|users|sync|audit) to the store:
// each is validated whole, applied atomically with its ack, version-ordered
// and idempotent, and answered with exactly one ack on locky/up/acks. A sync
// is answered with a snapshot on locky/up/snapshot and an audit request with
// a page of the audit trail on locky/up/audit, each committed with its ack.
//
// The handler subscribes to every topic below locky/down/ but
// locky/down/commands (the controller's), so that a topic the contract does
// not know gets an "entity unknown" ack. A message is handled on the
// publisher's goroutine and the handler's answer is Deliver's, so the bridge,
// which delivers the cloud's messages through the broker, knows when one is
// committed.
//
// Its place in the layering: a handler, on the store and the contract.
//
// When the store cannot commit a message (a full disk), nothing of it is
// stored and it is answered with an ack that names the failure, so that the
// back-end sends it again once the locker reports store.recovered. When even
// that ack cannot be committed, it is held and retried with back-off until
// it can be: every message gets its one ack.
package storehandler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
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
	// SetPending says how many acks the handler holds for retry.
	SetPending(owner string, n int)
}

// Broker is how the handler takes its topics from the local broker: fn's
// error is the answer to the publisher that delivered the message.
type Broker interface {
	Handle(filter string, fn func(contract.Message) error) error
}

// Config configures a Handler.
type Config struct {
	Store  Store  // required
	Broker Broker // required
	// Grace is the codes' grace period, which decides whether a code of an
	// old reservation may be reused. Zero means contract.DefaultGrace.
	Grace   time.Duration
	Metrics *metrics.Set // nil means a private set
	Logger  *slog.Logger // nil means slog.Default()
	// RetryBase is the first wait before an ack that failed to commit is
	// tried again; it doubles up to RetryMax. Zero means 250 ms and 5 s.
	RetryBase, RetryMax time.Duration
}

// Handler handles downstream messages.
type Handler struct {
	cfg      Config
	log      *slog.Logger
	accepted *metrics.Counter
	rejected *metrics.Counter
	failed   *metrics.Counter

	mu     sync.Mutex // guards the fields below
	held   []heldAck  // acks that failed to commit, oldest first
	timer  *time.Timer
	delay  time.Duration
	closed bool
}

// heldAck is the ack of a message that the store could not commit.
type heldAck struct {
	msgID string
	err   error
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Broker == nil {
		return nil, errors.New("storehandler: Store and Broker are required")
	}
	if cfg.Grace == 0 {
		cfg.Grace = contract.DefaultGrace
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase = 250 * time.Millisecond
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 5 * time.Second
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

// Start subscribes the handler to locky/down/#. It runs nothing of its own:
// messages are handled on their publisher's goroutine, and held acks on a
// timer.
func (h *Handler) Start(context.Context) error {
	err := h.cfg.Broker.Handle(contract.TopicDownPrefix+"#", func(m contract.Message) error {
		if m.Topic == contract.TopicDownCommands {
			return contract.ErrNotMine // the controller's
		}
		return h.Handle(m)
	})
	if err != nil {
		return fmt.Errorf("storehandler: cannot subscribe to %s#: %w", contract.TopicDownPrefix, err)
	}
	return nil
}

// Handle applies one message of locky/down/{entity}. When the store fails,
// nothing of the message is stored and it is acked with the error, at once
// or, when that ack cannot be committed either, by a retry once it can be.
// It returns an error only once Close was called and such an ack could not
// be held: the message should then be redelivered.
func (h *Handler) Handle(m contract.Message) error {
	h.retry() // acks held from before first, and a working store shows now
	entity := strings.TrimPrefix(m.Topic, contract.TopicDownPrefix)
	now := time.Now()
	msgs, err := h.apply(now, entity, m.Payload)
	if err != nil {
		h.failed.Inc()
		what := "its storage fails"
		if store.IsNoSpace(err) {
			what = "its storage is full"
		}
		msgID := contract.MsgIDOf(m.Payload)
		ackErr := fmt.Errorf("the locker cannot store this message (%s), so nothing of it was stored; send it again once the locker reports store.recovered: %w", what, err)
		if _, aerr := h.cfg.Store.Ack(now, msgID, ackErr); aerr == nil {
			h.log.Error("cannot apply a downstream message; acked it with the error, the back-end should send it again", "topic", m.Topic, "msg_id", msgID, "err", err)
			return nil
		}
		if !h.hold(msgID, ackErr) {
			return fmt.Errorf("cannot apply a downstream message, nor ack it, and the handler is closed: %w", err)
		}
		h.log.Error("cannot apply a downstream message nor commit its ack; the ack (with the error) is retried until it commits", "topic", m.Topic, "msg_id", msgID, "err", err)
		return nil
	}
	for _, a := range msgs {
		if a.Refusal != "" {
			h.rejected.Inc()
			h.log.Info("rejected a downstream message", "topic", m.Topic, "msg_id", contract.MsgIDOf(m.Payload), "error", a.Refusal)
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

// hold keeps an ack for retry. It reports false once the handler is closed.
func (h *Handler) hold(msgID string, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.held = append(h.held, heldAck{msgID, err})
	h.cfg.Store.SetPending("storehandler", len(h.held))
	h.scheduleLocked()
	return true
}

// scheduleLocked arms the retry timer, the wait doubling from RetryBase up
// to RetryMax while the acks keep failing.
func (h *Handler) scheduleLocked() {
	if h.timer != nil || h.closed || len(h.held) == 0 {
		return
	}
	switch {
	case h.delay == 0:
		h.delay = h.cfg.RetryBase
	case h.delay < h.cfg.RetryMax:
		h.delay = min(2*h.delay, h.cfg.RetryMax)
	}
	h.timer = time.AfterFunc(h.delay, func() {
		h.mu.Lock()
		h.timer = nil
		h.mu.Unlock()
		h.retry()
	})
}

// retry commits the held acks, oldest first; those that fail stay held.
func (h *Handler) retry() {
	h.mu.Lock()
	todo := h.held
	h.held = nil
	h.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	var kept []heldAck
	for i, a := range todo {
		if _, err := h.cfg.Store.Ack(time.Now(), a.msgID, a.err); err != nil {
			kept = append(kept, todo[i:]...) // the store still fails: keep the order
			break
		}
		h.log.Info("committed a held ack", "msg_id", a.msgID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = append(kept, h.held...)
	if len(h.held) == 0 {
		h.delay = 0
	}
	h.cfg.Store.SetPending("storehandler", len(h.held))
	h.scheduleLocked()
}

// Close stops the retries. Acks still held are lost (logged): the back-end
// gets no answer to those messages and should send them again. It is safe to
// call more than once.
func (h *Handler) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	if len(h.held) > 0 {
		h.log.Error("stopping with acks the store could not commit; the back-end gets no answer to these messages and should send them again",
			"acks", len(h.held), "first_msg_id", h.held[0].msgID)
	}
	return nil
}
