package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/locky-edge/locky/handlers/store"
)

// seqKey marks, in the context of a publish, the outbox sequence it carries.
type seqKey struct{}

// window is the paho session state of one connection, which also reports the
// outcome of each outbox message published on it: paho's asynchronous publish
// returns once the packet is written and tells nobody of its PUBACK; the
// window routes it, with the message's outbox sequence, to acks.
//
// A fresh window per connection means paho never resends anything by itself
// after a reconnect: the outbox is the one source of what to resend.
type window struct {
	session.SessionManager
	size int
	// acks receives one packet per outbox message added to the session: its
	// PUBACK, or a zero packet when the session closes first. It must never
	// fill (paho sends to it holding its lock): the pump keeps at most size
	// messages unanswered, and stops publishing at the first failure.
	acks chan packets.ControlPacket

	mu   sync.Mutex
	seqs map[uint16]uint64 // packet id -> outbox sequence
}

func newWindow(size int) *window {
	return &window{
		SessionManager: state.NewInMemory(),
		size:           size,
		acks:           make(chan packets.ControlPacket, size+1),
		seqs:           make(map[uint16]uint64, size),
	}
}

// AddToSession routes the answer to an outbox message to w.acks.
func (w *window) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	seq, ok := ctx.Value(seqKey{}).(uint64)
	pub, isPub := p.(*packets.Publish)
	if !ok || !isPub {
		return w.SessionManager.AddToSession(ctx, p, resp)
	}
	if err := w.SessionManager.AddToSession(ctx, p, w.acks); err != nil {
		return err
	}
	// The PUBACK cannot arrive before the packet is written, which paho does
	// after this returns.
	w.mu.Lock()
	w.seqs[pub.PacketID] = seq
	w.mu.Unlock()
	return nil
}

// take returns the outbox sequence of the packet id that a PUBACK answers.
func (w *window) take(id uint16) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seq, ok := w.seqs[id]
	delete(w.seqs, id)
	return seq, ok
}

// close ends the session; unanswered messages get a zero packet on acks.
func (w *window) close() {
	_ = w.SessionManager.Close() // the in-memory state never fails to close
}

// pump publishes the outbox in order on one connection, keeping up to the
// window's size in flight, and hands each acknowledged sequence to the
// remover. It returns when the connection ends or ctx is done.
//
// What it reads it holds (Outbox.OutboxHold), so that the outbox's bounds do
// not drop a message whose PUBACK may yet come: dropped, it would be counted
// so although delivered. A held message is handed to the remover (which
// releases it as it removes it), or released here when the cloud broker
// refuses it or the connection ends first: it stays in the outbox, sent
// again on the next connection, and the bounds apply to it again meanwhile.
func (b *Bridge) pump(ctx context.Context, cli *paho.Client, w *window, rm *remover) error {
	p := &pumpState{held: map[uint64]struct{}{}, more: true}
	defer func() {
		b.inflight.Store(0)
		b.cfg.Outbox.OutboxRelease(slices.Collect(maps.Keys(p.held))...)
	}()
	notify := b.cfg.Outbox.OutboxNotify()
	for {
		for p.more && p.inflight < w.size {
			room := w.size - p.inflight
			msgs, err := b.cfg.Outbox.OutboxHold(p.next, room)
			if err != nil {
				b.outboxLog.Log(slog.LevelError, "cannot read the outbox; retrying", "error", err)
				if !sleep(ctx, cli.Done(), b.cfg.RetryMin) {
					return nil
				}
				continue
			}
			p.more = len(msgs) == room
			for _, m := range msgs {
				p.held[m.Seq] = struct{}{}
			}
			for _, m := range msgs {
				if err := b.publishOne(ctx, cli, rm, p, m); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
			}
		}
		var wake <-chan struct{}
		if !p.more {
			wake = notify
		}
		select {
		case a := <-w.acks:
			p.inflight--
			b.inflight.Store(int64(p.inflight))
			b.acked(a, w, rm, p.held)
		case <-wake:
			p.more = true
		case <-cli.Done():
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// pumpState is what pump keeps of one connection.
type pumpState struct {
	held     map[uint64]struct{} // held, not handed to the remover
	next     uint64              // last sequence published on this connection
	inflight int                 // published with QoS 1, not answered yet
	more     bool                // the outbox may hold more than was read
}

// publishOne sends one held outbox message without waiting for its PUBACK: a
// QoS 1 message stays held and counts in flight, a QoS 0 one goes to the
// remover once written, and one no Up mapping matches is discarded.
func (b *Bridge) publishOne(ctx context.Context, cli *paho.Client, rm *remover, p *pumpState, m store.Message) error {
	topic, qos, ok := mapTopic(b.up, m.Topic)
	if !ok {
		b.log.Error("outbox message on a topic that no Up mapping matches: dropped; fix the bridge mappings",
			"topic", m.Topic, "seq", m.Seq)
		rm.discard(m.Seq)
		delete(p.held, m.Seq)
		p.next = m.Seq
		return nil
	}
	pctx := context.WithValue(ctx, seqKey{}, m.Seq)
	_, err := cli.PublishWithOptions(pctx, &paho.Publish{QoS: qos, Topic: topic, Payload: m.Payload},
		paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	if err != nil {
		// The link is going down (or the broker cannot take this
		// message): the next connection starts from the outbox again.
		return fmt.Errorf("cannot publish outbox message %d on %s: %w", m.Seq, topic, err)
	}
	b.m.sent.Inc()
	p.next = m.Seq
	if qos == 0 {
		rm.add(m.Seq) // written is all that QoS 0 delivers
		delete(p.held, m.Seq)
	} else {
		p.inflight++
		b.inflight.Store(int64(p.inflight))
	}
	return nil
}

// acked handles the cloud broker's answer to one outbox message, held by
// the pump in held.
func (b *Bridge) acked(a packets.ControlPacket, w *window, rm *remover, held map[uint64]struct{}) {
	pa, ok := a.Content.(*packets.Puback)
	if !ok {
		return // the session closed first: the message stays in the outbox
	}
	seq, ok := w.take(pa.PacketID)
	if !ok {
		return
	}
	delete(held, seq)
	if pa.ReasonCode >= 0x80 {
		b.cfg.Outbox.OutboxRelease(seq)
		b.m.rejected.Inc()
		b.upLog.Log(slog.LevelError, "the cloud broker refused an upstream message; it stays in the outbox and is sent again after the next reconnect; check the broker's ACL for lockers/{id}/#",
			"seq", seq, "reason", pa.Reason(), "reason_code", fmt.Sprintf("0x%02x", pa.ReasonCode))
		return
	}
	b.m.acked.Inc()
	rm.add(seq)
}

// sleep waits d unless ctx or done ends first; it reports whether it waited.
func sleep(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-done:
		return false
	}
}

// remover deletes acknowledged messages from the outbox in the background,
// all that were acknowledged since its last commit in one transaction, so
// that a disk sync does not stall the pump. It counts as delivered, and as
// dropped unmapped, only what its deletions found: a message that a bound
// had dropped first is counted there, and one acknowledged twice (resent
// after a reconnect) once.
type remover struct {
	b    *Bridge
	wake chan struct{}

	mu       sync.Mutex
	seqs     []uint64 // delivered: acknowledged, or QoS 0 and written
	unmapped []uint64 // dropped: no Up mapping matches
}

func newRemover(b *Bridge) *remover {
	return &remover{b: b, wake: make(chan struct{}, 1)}
}

// add queues a delivered message for removal.
func (r *remover) add(seq uint64) {
	r.mu.Lock()
	r.seqs = append(r.seqs, seq)
	r.mu.Unlock()
	r.poke()
}

// discard queues for removal a message that no Up mapping matches.
func (r *remover) discard(seq uint64) {
	r.mu.Lock()
	r.unmapped = append(r.unmapped, seq)
	r.mu.Unlock()
	r.poke()
}

func (r *remover) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run removes until ctx is done, then removes what is left.
func (r *remover) run(ctx context.Context) {
	for {
		select {
		case <-r.wake:
			r.flush()
		case <-ctx.Done():
			r.flush()
			return
		}
	}
}

func (r *remover) flush() {
	r.mu.Lock()
	seqs, unmapped := r.seqs, r.unmapped
	r.seqs, r.unmapped = nil, nil
	r.mu.Unlock()
	if len(unmapped) > 0 { // rare (a mapping mistake): a transaction of their own
		n, err := r.b.cfg.Outbox.OutboxDelivered(unmapped...)
		r.b.m.dropped.Add(n)
		if err != nil {
			r.b.outboxLog.Log(slog.LevelError, "cannot remove unmapped messages from the outbox; they are read again after the next reconnect",
				"count", len(unmapped), "error", err)
		}
	}
	if len(seqs) == 0 {
		return
	}
	n, err := r.b.cfg.Outbox.OutboxDelivered(seqs...)
	r.b.m.upDelivered.Add(n)
	if err != nil {
		// They stay in the outbox, released (under its bounds again), and are
		// sent again after the next reconnect: a duplicate, not a loss.
		r.b.outboxLog.Log(slog.LevelError, "cannot remove acknowledged messages from the outbox; they will be sent again",
			"count", len(seqs), "error", err)
	}
}
