// Package door connects a door driver to the broker: open commands on
// locky/doors/{door}/command reach the driver, and every state the driver
// reports is published, retained, on locky/doors/{door}/state.
//
// It subscribes to locky/doors/+/command. Its place in the layering: a
// handler, on the contract; the driver (lockio) is handed to it.
package door

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/locky-edge/locky/handlers/contract"
)

// Driver is a bank of door locks.
type Driver interface {
	Open(door int) error
	// Watch registers the receiver of state changes and reports every
	// door's current state to it.
	Watch(report func(door int, st contract.DoorState))
}

// Broker is what the handler needs of the local broker.
type Broker interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
	Subscribe(filter string, fn func(contract.Message)) error
}

// Config configures a Handler.
type Config struct {
	Driver Driver       // required
	Broker Broker       // required
	Logger *slog.Logger // nil means slog.Default()
}

// Handler runs a door driver on the broker.
type Handler struct {
	cfg   Config
	log   *slog.Logger
	queue chan int
	wg    sync.WaitGroup

	mu      sync.Mutex
	cancel  context.CancelFunc // ends the driver goroutine; nil before Start
	started bool               // Start was called
	closed  bool               // Close was called: commands are dropped
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Driver == nil || cfg.Broker == nil {
		return nil, errors.New("door: Driver and Broker are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Handler{cfg: cfg, log: cfg.Logger.With("component", "door"), queue: make(chan int, 256)}, nil
}

// Start subscribes to the door commands and publishes the doors' states; the
// driver is driven from its own goroutine until ctx ends or Close is called.
// It may be called once, and not after Close.
func (h *Handler) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.started || h.closed {
		h.mu.Unlock()
		return errors.New("door: Start may be called once, and not after Close")
	}
	h.started = true
	h.mu.Unlock()
	h.cfg.Driver.Watch(h.report)
	if err := h.cfg.Broker.Subscribe(contract.TopicDoorCommands, h.command); err != nil {
		return fmt.Errorf("door: cannot subscribe to %s: %w", contract.TopicDoorCommands, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed { // Close came meanwhile: it did not wait for a goroutine
		return errors.New("door: closed while starting")
	}
	ctx, h.cancel = context.WithCancel(ctx)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case door := <-h.queue:
				// select picks at random among ready cases: a command
				// taken after the stop is dropped, as Close says.
				if ctx.Err() != nil {
					h.dropped(door)
					continue
				}
				if err := h.cfg.Driver.Open(door); err != nil {
					h.log.Warn("door driver refused an open command", "door", door, "err", err)
				}
			}
		}
	}()
	return nil
}

// Close stops the driver goroutine and waits for it. A command not yet
// handed to the driver is dropped, and so is one that arrives afterwards,
// each logged: the gateway stops, and its door's state could not be
// published any more. It is safe to call more than once.
func (h *Handler) Close() error {
	h.mu.Lock()
	h.closed = true
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
	for {
		select {
		case door := <-h.queue:
			h.dropped(door)
		default:
			return nil
		}
	}
}

// dropped logs a command dropped because the handler stops.
func (h *Handler) dropped(door int) {
	h.log.Warn("door command dropped, not sent to the lock: the gateway is stopping and could not publish the door's state (the code stays valid)", "door", door)
}

func (h *Handler) command(m contract.Message) {
	door, err := contract.DoorFromTopic(m.Topic, "command")
	if err != nil {
		h.log.Warn("ignored a command on a bad door topic", "topic", m.Topic)
		return
	}
	if _, err := contract.DecodeDoorCommand(m.Payload); err != nil {
		h.log.Warn("ignored a door command that does not decode", "door", door, "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		h.dropped(door)
		return
	}
	select {
	case h.queue <- door:
	default:
		h.log.Error("door command queue full; command dropped (the controller reports a door fault)", "door", door)
	}
}

func (h *Handler) report(door int, st contract.DoorState) {
	payload, err := json.Marshal(st)
	if err != nil {
		h.log.Error("cannot encode a door state", "err", err)
		return
	}
	if err := h.cfg.Broker.Publish(contract.DoorStateTopic(door), payload, true, 1); err != nil {
		h.log.Error("cannot publish a door state", "door", door, "err", err)
	}
}
