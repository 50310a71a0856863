package broker

import (
	"errors"
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
)

// TestDeliverAnswersWithTheHandlersError: a message delivered through the
// broker reaches its network subscribers like any publish, and Deliver
// answers with what the handler of its topic said; a network client's publish
// that the handler refuses is nobody's answer, and a topic that no handler
// takes is ErrUnhandled, not a success.
func TestDeliverAnswersWithTheHandlersError(t *testing.T) {
	b := startBroker(t, Config{AllowAnonymous: true})
	refused := errors.New("refused by the handler")
	handled := make(chan string, 16)
	err := b.Handle("locky/down/#", func(m contract.Message) error {
		handled <- string(m.Payload)
		if strings.Contains(m.Topic+string(m.Payload), "bad") {
			return refused
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	watcher := mustConnect(t, b, opts{id: "watcher", subscribe: "locky/down/#"})
	publisher := mustConnect(t, b, opts{id: "publisher"})

	if err := b.Deliver("locky/down/doors", []byte(`{"good":1}`), 1); err != nil {
		t.Fatalf("Deliver of a message the handler takes: %v; want nil", err)
	}
	if got := watcher.await(t, "locky/down/doors"); got != `{"good":1}` {
		t.Errorf("the subscriber got %s; want the delivered message", got)
	}
	if err := b.Deliver("locky/down/doors", []byte(`{"bad":1}`), 1); !errors.Is(err, refused) {
		t.Fatalf("Deliver of a message the handler refuses: %v; want its error", err)
	}

	if !publisher.may("locky/down/doors", true) { // publishes {}, which the handler takes
		t.Fatal("the publisher may not publish on locky/down/doors")
	}
	if !publisher.may("locky/down/bad", true) { // the handler refuses it
		t.Fatal("the publisher may not publish on locky/down/bad")
	}
	for _, want := range []string{`{"good":1}`, `{"bad":1}`, `{}`, `{}`} {
		if got := <-handled; got != want {
			t.Fatalf("the handler got %s; want %s", got, want)
		}
	}
	if err := b.Deliver("locky/down/doors", []byte(`{"good":2}`), 1); err != nil {
		t.Errorf("Deliver after a network client's refused publish: %v; want nil", err)
	}

	if err := b.Deliver("locky/elsewhere", []byte(`{}`), 1); !errors.Is(err, ErrUnhandled) {
		t.Errorf("Deliver on a topic no handler takes: %v; want ErrUnhandled", err)
	}
}

// TestDeliverCountsOnlyTheHandlerThatTakesIt: a handler whose filter matches
// but that leaves the topic to another (contract.ErrNotMine) does not make
// a message handled: alone, the answer is ErrUnhandled, which tells the
// bridge not to retry it.
func TestDeliverCountsOnlyTheHandlerThatTakesIt(t *testing.T) {
	b := startBroker(t, Config{AllowAnonymous: true})
	if err := b.Handle("locky/down/#", func(m contract.Message) error {
		if m.Topic == contract.TopicDownCommands {
			return contract.ErrNotMine
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err := b.Deliver(contract.TopicDownCommands, []byte(`{}`), 1)
	var u interface{ Unhandled() bool }
	if !errors.Is(err, ErrUnhandled) || !errors.As(err, &u) || !u.Unhandled() {
		t.Fatalf("Deliver with only a handler that leaves the topic: %v; want ErrUnhandled, saying so", err)
	}
	committed := errors.New("taken")
	if err := b.Handle(contract.TopicDownCommands, func(contract.Message) error { return committed }); err != nil {
		t.Fatal(err)
	}
	if err := b.Deliver(contract.TopicDownCommands, []byte(`{}`), 1); !errors.Is(err, committed) {
		t.Errorf("Deliver with the topic's own handler: %v; want its answer", err)
	}
}
