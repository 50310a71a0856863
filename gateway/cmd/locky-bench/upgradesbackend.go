package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/handlers/contract"
)

// ackWait is how long the back-end waits for the ack of an upsert before it
// sends it again (the gateway acks a redelivery and ignores it).
const ackWait = time.Second

// backend is the back-end: it takes the status events and puts a new
// reservation on each door whose parcel was picked up.
type backend struct {
	link *link
	pool *pool
	r    *router
}

func newBackend(p *pool) *backend {
	b := &backend{pool: p, r: newRouter(nil)}
	b.link = &link{name: "bench-backend", filters: []string{contract.TopicAcks, contract.TopicEvents}, onMsg: b.receive}
	return b
}

func (b *backend) receive(pr paho.PublishReceived) (bool, error) {
	if pr.Packet.Topic != contract.TopicEvents {
		return b.r.receive(pr)
	}
	var ev contract.Event
	if json.Unmarshal(pr.Packet.Payload, &ev) == nil {
		b.pool.event(ev, time.Now())
	}
	return true, nil
}

// renewLoop puts a new reservation on each door the pool hands it, until
// ctx ends.
func (b *backend) renewLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case door := <-b.pool.upserts:
			i := b.pool.renew(door)
			if err := b.upsert(ctx, i, door); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			b.pool.free(door)
		}
	}
}

// upsert upserts reservation i (arriving on door) and waits for its ok
// ack, sending it again while none comes, for at most waitLimit.
func (b *backend) upsert(ctx context.Context, i, door int) error {
	m := contract.DownMessage{MsgID: fmt.Sprintf("renew-%d", i), Op: contract.OpUpsert,
		Reservation: &contract.Reservation{ID: reservationID(i), Version: 1, Door: door, Status: contract.StatusArriving,
			DepositCode: depositCode(i), PickupCode: pickupCode(i), CourierCode: courierCode(i)}}
	key := "ack:" + m.MsgID
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		ch := b.r.expect(key)
		if err := b.link.publish(ctx, contract.TopicDownPrefix+contract.EntityReservations, m, false); err != nil {
			if err := sleep(ctx, 5*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		ack, err := b.r.awaitWithin(ctx, key, ch, ackWait)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err != nil {
			continue // the ack went while the back-end was reconnecting
		}
		var a contract.Ack
		if err := json.Unmarshal(ack.payload, &a); err != nil || !a.OK {
			return fmt.Errorf("reservation %s on door %d: ack %s; want ok (is the door still occupied?)", m.Reservation.ID, door, ack.payload)
		}
		return nil
	}
	return fmt.Errorf("no ack of reservation %s within %s; see the gateway's log", m.Reservation.ID, waitLimit)
}
