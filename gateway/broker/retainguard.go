package broker

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// retainGuard works around a data race in mochi v2.7.9: a retained publish
// writes a topic node's retainPath under the index's locks, while a wildcard
// subscription reads it without them when it sends the retained messages to
// the new subscriber. Door states are retained and clients subscribe to
// locky/# at any time, so the two meet. The guard makes retained publishes
// exclusive with the retained scan of subscriptions.
//
// For network clients the lock is taken in OnPublish/OnSubscribe and released
// in OnPacketProcessed, which mochi calls after every packet that reached
// them (one client's packets are processed one at a time, so a per-client
// mark pairs them). The gateway's own (inline) publishes and subscriptions
// take the lock in Broker.Publish and Broker.Subscribe instead. A retained
// Will is retained by mochi without OnPublish: the lock is taken in OnWill
// and released in OnWillSent, which pair because the auth hook sends every
// Will at once (a delayed Will would skip OnWillSent).
type retainGuard struct {
	mqtt.HookBase
	mu    sync.RWMutex
	held  sync.Map // *mqtt.Client → 'w' or 'r'
	wills sync.Map // *mqtt.Client → struct{}: a retained Will being sent
}

func (h *retainGuard) ID() string { return "retain-guard" }

func (h *retainGuard) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnSubscribe || b == mqtt.OnPacketProcessed ||
		b == mqtt.OnWill || b == mqtt.OnWillSent
}

func (h *retainGuard) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain && cl.Properties.Will.WillDelayInterval == 0 {
		h.mu.Lock()
		h.wills.Store(cl, struct{}{})
	}
	return will, nil
}

func (h *retainGuard) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	if _, ok := h.wills.LoadAndDelete(cl); ok {
		h.mu.Unlock()
	}
}

func (h *retainGuard) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && !cl.Net.Inline {
		h.mu.Lock()
		h.held.Store(cl, byte('w'))
	}
	return pk, nil
}

func (h *retainGuard) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if !cl.Net.Inline {
		h.mu.RLock()
		h.held.Store(cl, byte('r'))
	}
	return pk
}

func (h *retainGuard) OnPacketProcessed(cl *mqtt.Client, _ packets.Packet, _ error) {
	v, ok := h.held.LoadAndDelete(cl)
	if !ok {
		return
	}
	if v.(byte) == 'w' {
		h.mu.Unlock()
	} else {
		h.mu.RUnlock()
	}
}
