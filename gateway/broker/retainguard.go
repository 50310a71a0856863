package broker

import (
	"sync"
	"sync/atomic"

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
//
// A retained publish releases the lock in OnRetainMessage, as soon as mochi
// has retained it and before it delivers it: the gateway's own callbacks run
// during delivery, and one that publishes a retained message, or waits for
// a goroutine that does, would otherwise wait for the lock its own publish
// holds. OnPacketProcessed, OnWillSent and Broker.Publish release it when
// mochi retained nothing (a refused or ignored publish).
type retainGuard struct {
	mqtt.HookBase
	mu     sync.RWMutex
	held   sync.Map // *mqtt.Client → 'w' or 'r'
	wills  sync.Map // *mqtt.Client → struct{}: a retained Will being sent
	inline atomic.Pointer[guardHold]
}

// guardHold is the write lock held by one retained publish of the gateway.
type guardHold struct {
	g    *retainGuard
	once sync.Once
}

// lockInline takes the write lock for a retained publish of the gateway.
func (h *retainGuard) lockInline() *guardHold {
	h.mu.Lock()
	hold := &guardHold{g: h}
	h.inline.Store(hold)
	return hold
}

// release releases the lock once.
func (hold *guardHold) release() {
	hold.once.Do(func() {
		hold.g.inline.CompareAndSwap(hold, nil)
		hold.g.mu.Unlock()
	})
}

// OnRetainMessage releases the write lock once mochi has retained.
func (h *retainGuard) OnRetainMessage(cl *mqtt.Client, _ packets.Packet, _ int64) {
	if cl.Net.Inline {
		if hold := h.inline.Load(); hold != nil {
			hold.release()
		}
		return
	}
	if _, ok := h.wills.LoadAndDelete(cl); ok {
		h.mu.Unlock()
		return
	}
	if v, ok := h.held.Load(cl); ok && v.(byte) == 'w' {
		h.held.Delete(cl)
		h.mu.Unlock()
	}
}

func (h *retainGuard) ID() string { return "retain-guard" }

func (h *retainGuard) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnSubscribe || b == mqtt.OnPacketProcessed ||
		b == mqtt.OnWill || b == mqtt.OnWillSent || b == mqtt.OnRetainMessage
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
