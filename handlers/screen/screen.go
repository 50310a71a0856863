// Package screen connects a touchscreen that is not itself an MQTT client (the
// web kiosk) to the broker: a code entered on it is published on
// locky/screen/code exactly as a touchscreen app would, and the answer on
// locky/screen/display is handed back to whoever waits for that request.
package screen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/locky-edge/locky/handlers/contract"
)

// Broker is what the handler needs of the local broker.
type Broker interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	Subscribe(filter string, fn func(contract.Message)) error
}

// Handler is the screen handler.
type Handler struct {
	broker Broker

	mu      sync.Mutex
	waiters map[string]chan contract.Display
	watch   map[chan contract.Display]struct{}
}

// New returns a Handler; Start subscribes it.
func New(b Broker) (*Handler, error) {
	if b == nil {
		return nil, errors.New("screen: Broker is required")
	}
	return &Handler{broker: b, waiters: map[string]chan contract.Display{}, watch: map[chan contract.Display]struct{}{}}, nil
}

// Start subscribes to the display topic.
func (h *Handler) Start() error {
	return h.broker.Subscribe(contract.TopicScreenDisplay, h.display)
}

func (h *Handler) display(m contract.Message) {
	var d contract.Display
	if json.Unmarshal(m.Payload, &d) != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.waiters[d.RequestID]; ok {
		select {
		case ch <- d:
		default:
		}
	}
	for ch := range h.watch {
		select {
		case ch <- d:
		default: // a slow watcher misses a message rather than stalling the broker
		}
	}
}

// Submit enters a code as the touchscreen would and waits for the locker's
// answer: first the immediate one (opened comes when the door reports open).
func (h *Handler) Submit(ctx context.Context, code string) (contract.Display, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	req := contract.CodeRequest{Code: code, RequestID: "kiosk-" + hex.EncodeToString(id[:])}
	ch := make(chan contract.Display, 1)
	h.mu.Lock()
	h.waiters[req.RequestID] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiters, req.RequestID)
		h.mu.Unlock()
	}()
	payload, err := json.Marshal(req)
	if err != nil {
		return contract.Display{}, err
	}
	if err := h.broker.Publish(contract.TopicScreenCode, payload, false, 1); err != nil {
		return contract.Display{}, fmt.Errorf("screen: cannot publish the code: %w", err)
	}
	select {
	case d := <-ch:
		return d, nil
	case <-ctx.Done():
		return contract.Display{}, fmt.Errorf("screen: no answer from the locker: %w", ctx.Err())
	}
}

// Watch returns a channel of every display message until cancel is called.
func (h *Handler) Watch() (<-chan contract.Display, func()) {
	ch := make(chan contract.Display, 16)
	h.mu.Lock()
	h.watch[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.watch, ch)
		h.mu.Unlock()
	}
}
