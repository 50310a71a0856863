package bridge

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// maxWaiting bounds the downstream messages waiting for local delivery on one
// connection. QoS 1 messages never reach it: the cloud broker sends at most
// receiveMaximum of them unacknowledged. Past it, a QoS 0 message is dropped
// and counted (QoS 0 is at most once).
const maxWaiting = 4 * receiveMaximum

// downMsg is a downstream message mapped to its local topic.
type downMsg struct {
	pub   *paho.Publish
	topic string
	qos   byte
}

// downQueue holds, in order of receipt, the downstream messages of one
// connection that are not yet delivered locally. paho hands them over on its
// routing goroutine, which must not wait for the locker: upstream PUBACKs and
// the keep-alive depend on paho reading on.
type downQueue struct {
	mu    sync.Mutex
	items []downMsg
	n     *atomic.Int64 // len(items), for the gauge
	wake  chan struct{}
}

func newDownQueue(n *atomic.Int64) *downQueue {
	return &downQueue{n: n, wake: make(chan struct{}, 1)}
}

// push appends m unless the queue is full and m is QoS 0; it returns the
// length of the queue after it, and whether m was taken.
func (q *downQueue) push(m downMsg) (int, bool) {
	q.mu.Lock()
	if len(q.items) >= maxWaiting && m.qos == 0 {
		n := len(q.items)
		q.mu.Unlock()
		return n, false
	}
	q.items = append(q.items, m)
	n := len(q.items)
	q.n.Store(int64(n))
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return n, true
}

func (q *downQueue) head() (downMsg, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return downMsg{}, false
	}
	return q.items[0], true
}

func (q *downQueue) pop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items[0] = downMsg{}
	q.items = q.items[1:]
	q.n.Store(int64(len(q.items)))
}

// receive returns the handler of the messages that the cloud broker sends on
// one connection: it maps each to its local topic and queues it for deliver.
func (b *Bridge) receive(q *downQueue) func(paho.PublishReceived) (bool, error) {
	return func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		topic, qos, ok := mapTopic(b.down, p.Topic)
		if !ok {
			b.m.unmapped.Inc()
			b.downLog.Log(slog.LevelError, "downstream message on a topic that no Down mapping matches: dropped; fix the bridge mappings",
				"topic", p.Topic)
			b.ack(pr.Client, p) // paho sends it after those received before it
			return true, nil
		}
		n, taken := q.push(downMsg{pub: p, topic: topic, qos: qos})
		if !taken {
			b.m.overflow.Inc()
			b.downLog.Log(slog.LevelError, "a QoS 0 downstream message was dropped: too many wait behind one that the locker cannot commit",
				"topic", topic, "waiting", n)
			return true, nil
		}
		return true, nil
	}
}

// deliver hands the queued messages of one connection to the locker, one at
// a time in order of receipt, and acknowledges each to the cloud only once
// Local.Deliver returned without error (the store handlers committed it and
// its ack). A message that the locker cannot commit (a full disk, say) is
// retried with back-off while the link stays up and the outbox keeps
// draining; the messages behind it wait, since their order matters (an upsert
// then a delete of one reservation). It returns when the connection ends or
// ctx is done; what is not acknowledged then is sent again by the cloud
// broker on the next connection.
func (b *Bridge) deliver(ctx context.Context, cli *paho.Client, q *downQueue) {
	for {
		m, ok := q.head()
		if !ok {
			select {
			case <-q.wake:
				continue
			case <-cli.Done():
				return
			case <-ctx.Done():
				return
			}
		}
		if !b.deliverOne(ctx, cli, m) {
			return
		}
		q.pop()
	}
}

// deliverOne delivers m, retrying until it is committed; it reports false if
// the connection ended or ctx was done first.
func (b *Bridge) deliverOne(ctx context.Context, cli *paho.Client, m downMsg) bool {
	var since time.Time
	failures := 0
	for {
		err := b.cfg.Local.Deliver(m.topic, m.pub.Payload, m.qos)
		if err == nil {
			break
		}
		if isUnhandled(err) {
			// Retrying would publish it again, to the topic's plain
			// subscribers, at every back-off step (a door command mapped
			// by mistake would pulse the door each time): it is a mapping
			// mistake, dropped and counted once.
			b.m.unmapped.Inc()
			b.downLog.Log(slog.LevelError, "no handler of the locker takes this downstream topic: acknowledged and dropped; map the cloud's messages onto locky/down/ (--cloud-down)",
				"topic", m.topic, "error", err)
			b.ack(cli, m.pub)
			return true
		}
		failures++
		b.m.retries.Inc()
		wait := b.localBackoff(failures)
		if failures == 1 {
			since = time.Now()
			b.retrying.Store(true)
			b.publishStatus(ctx, cli, downState{retrying: true, topic: m.topic, err: err, since: since})
		}
		b.downLog.Log(slog.LevelError, "the locker cannot commit a downstream message; keeping the link and retrying it with back-off, the messages behind it wait and none is acknowledged to the cloud meanwhile",
			"topic", m.topic, "attempts", failures, "retry_in", wait, "waiting", b.waiting.Load(), "error", err)
		if !sleep(ctx, cli.Done(), wait) {
			b.retrying.Store(false)
			return false
		}
	}
	b.m.delivered.Inc()
	b.ack(cli, m.pub)
	if failures > 0 {
		b.retrying.Store(false)
		b.downLog.reset()
		b.log.Info("a downstream message was committed after local failures; the messages behind it follow",
			"topic", m.topic, "attempts", failures+1, "after", time.Since(since).Round(time.Millisecond))
		b.publishStatus(ctx, cli, downState{})
	}
	return true
}

// isUnhandled reports whether err says that no handler of the locker takes
// the topic (Local's error has an Unhandled() true method), as opposed to a
// handler that could not commit it yet.
func isUnhandled(err error) bool {
	var u interface{ Unhandled() bool }
	return errors.As(err, &u) && u.Unhandled()
}

// localBackoff is the pause after the n-th failed local delivery in a row:
// LocalRetryMin doubling up to LocalRetryMax.
func (b *Bridge) localBackoff(n int) time.Duration {
	d := b.cfg.LocalRetryMin
	for i := 1; i < n && d < b.cfg.LocalRetryMax; i++ {
		d *= 2
	}
	return min(d, b.cfg.LocalRetryMax)
}

// downState is what the status says of downstream delivery.
type downState struct {
	retrying bool
	topic    string // the local topic of the message retried
	err      error
	since    time.Time
}

func (b *Bridge) ack(cli *paho.Client, p *paho.Publish) {
	err := cli.Ack(p)
	switch {
	case err == nil:
	case errors.Is(err, paho.ErrPacketNotFound):
		// paho v0.23.0 resets its list of messages to acknowledge after it
		// starts reading, so a message the broker resends at once after the
		// CONNACK may be missing from it: it stays unacknowledged on this
		// connection and comes again after the next one (a duplicate).
		b.downLog.Log(slog.LevelWarn, "paho lost track of a downstream message to acknowledge; the cloud broker sends it again after the next reconnect",
			"topic", p.Topic, "error", err)
	default:
		// The connection is going down: the cloud broker sends it again.
		b.log.Debug("cannot acknowledge a downstream message", "topic", p.Topic, "error", err)
	}
}
