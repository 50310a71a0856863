package broker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/locky-edge/locky/handlers/contract"
)

// delivererID is the client id of the messages that Deliver publishes; the
// auth hook reserves it (it starts with reservedClientIDPrefix), so no network
// client can publish under it.
const delivererID = reservedClientIDPrefix + "-deliver"

// ErrUnhandled is Deliver's answer when no handler subscribed to the topic:
// nothing on the locker took the message. It says so to the bridge too
// (its Unhandled method), which then does not retry it.
var ErrUnhandled error = unhandledError{}

type unhandledError struct{}

func (unhandledError) Error() string   { return "no handler of the locker subscribes to this topic" }
func (unhandledError) Unhandled() bool { return true }

// delivery collects the answers of the handlers to one Deliver.
type delivery struct {
	handled int
	errs    []error
}

// deliverer publishes the messages of Deliver, one at a time, as a client of
// its own: the handlers run on the publisher's goroutine (mochi calls inline
// subscribers synchronously), so a message whose origin is the deliverer is
// the one of the Deliver in progress.
type deliverer struct {
	cl      *mqtt.Client
	mu      sync.Mutex               // one Deliver at a time
	current atomic.Pointer[delivery] // the Deliver in progress, if any
}

// Deliver publishes a message through the broker, to every subscriber as any
// publish, and returns once the handlers of its topic (see Handle) have run:
// nil when each took it, their errors joined when one did not, ErrUnhandled
// when none subscribes to the topic. The bridge acknowledges a cloud message
// only after a nil answer, so a message the locker did not commit is
// redelivered rather than lost.
func (b *Broker) Deliver(topic string, payload []byte, qos byte) error {
	d := &b.deliver
	d.mu.Lock()
	defer d.mu.Unlock()
	res := &delivery{}
	d.current.Store(res)
	defer d.current.Store(nil)
	err := b.srv.InjectPacket(d.cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(qos), // needed for the validity checks; inline publishes are not acknowledged
	})
	switch {
	case err != nil:
		return fmt.Errorf("the local broker refused the message on %s: %w", topic, err)
	case res.handled == 0:
		return fmt.Errorf("%s: %w", topic, ErrUnhandled)
	}
	return errors.Join(res.errs...)
}

// Handle subscribes fn to filter as the handler of the messages it matches,
// like Subscribe, and makes fn's error the answer to Deliver. The error of a
// message that a network client published is logged: there is nobody to
// answer it to (the handler's own ack, if any, has said what went wrong).
func (b *Broker) Handle(filter string, fn func(contract.Message) error) error {
	return b.subscribe(filter, func(pk packets.Packet) {
		err := fn(message(pk))
		if pk.Origin == delivererID {
			if res := b.deliver.current.Load(); res != nil {
				if errors.Is(err, contract.ErrNotMine) {
					return // left to the topic's other handler
				}
				res.handled++
				if err != nil {
					res.errs = append(res.errs, err)
				}
				return
			}
		}
		if err != nil && !errors.Is(err, contract.ErrNotMine) {
			b.log.Error("a message published on the local broker was not taken by its handler", "topic", pk.TopicName, "err", err)
		}
	})
}
