// Package screen connects a touchscreen that is not itself an MQTT client (the
// web kiosk) to the broker: a code entered on it is published on
// locky/screen/code exactly as a touchscreen app would, and the answer on
// locky/screen/display is handed back to whoever waits for that request.
//
// It subscribes to locky/screen/display. Its place in the layering: a
// handler, on the contract.
package screen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/locky-edge/locky/handlers/contract"
)

// Broker is what the handler needs of the local broker.
type Broker interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	Subscribe(filter string, fn func(contract.Message)) error
}

// Handler is the screen handler.
type Handler struct {
	broker  Broker
	answers contract.Replies[contract.Display] // by request_id
}

// New returns a Handler; Start subscribes it.
func New(b Broker) (*Handler, error) {
	if b == nil {
		return nil, errors.New("screen: Broker is required")
	}
	return &Handler{broker: b}, nil
}

// Start subscribes to the display topic. The handler runs nothing of its own.
func (h *Handler) Start(context.Context) error {
	if err := h.broker.Subscribe(contract.TopicScreenDisplay, h.display); err != nil {
		return fmt.Errorf("screen: cannot subscribe to %s: %w", contract.TopicScreenDisplay, err)
	}
	return nil
}

// Close does nothing: the handler has no goroutine, and a Submit waiting
// ends with its context.
func (h *Handler) Close() error { return nil }

func (h *Handler) display(m contract.Message) {
	var d contract.Display
	if json.Unmarshal(m.Payload, &d) == nil {
		h.answers.Answer(d.RequestID, d)
	}
}

// Submit enters a code as the touchscreen would and waits for the locker's
// answer: first the immediate one (opened comes when the door reports open).
func (h *Handler) Submit(ctx context.Context, code string) (contract.Display, error) {
	if err := ctx.Err(); err != nil {
		// The caller gave up: a code published now could open a door for
		// nobody who waits for its answer.
		return contract.Display{}, fmt.Errorf("screen: code not sent, the request ended first: %w", err)
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return contract.Display{}, fmt.Errorf("screen: cannot make a request id: %w", err)
	}
	req := contract.CodeRequest{Code: code, RequestID: "kiosk-" + hex.EncodeToString(id[:])}
	payload, err := json.Marshal(req)
	if err != nil {
		return contract.Display{}, err
	}
	answer, done := h.answers.Expect(req.RequestID)
	defer done()
	if err := h.broker.Publish(contract.TopicScreenCode, payload, false, 1); err != nil {
		return contract.Display{}, fmt.Errorf("screen: cannot publish the code: %w", err)
	}
	select {
	case d := <-answer:
		return d, nil
	case <-ctx.Done():
		return contract.Display{}, fmt.Errorf("screen: no answer from the locker: %w", ctx.Err())
	}
}
