package screen_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/screen"
)

// rig is a started screen handler on the real broker, and a client that
// plays the controller: it reads locky/screen/code and answers on
// locky/screen/display.
type rig struct {
	h   *screen.Handler
	ctl *gatewaytest.Client
}

func newRig(t *testing.T) *rig {
	t.Helper()
	b := gatewaytest.StartBroker(t)
	h, err := screen.New(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return &rig{h: h, ctl: gatewaytest.Connect(t, b.Addr(), contract.TopicScreenCode)}
}

type result struct {
	d   contract.Display
	err error
}

// submit runs Submit on its own goroutine; its result comes on the channel.
func (r *rig) submit(ctx context.Context, code string) <-chan result {
	out := make(chan result, 1)
	go func() {
		d, err := r.h.Submit(ctx, code)
		out <- result{d, err}
	}()
	return out
}

// request waits for the code request the handler published for code.
func (r *rig) request(t *testing.T, code string) contract.CodeRequest {
	t.Helper()
	m := r.ctl.Await(contract.TopicScreenCode, func(p []byte) bool {
		var req contract.CodeRequest
		return json.Unmarshal(p, &req) == nil && req.Code == code
	})
	var req contract.CodeRequest
	if err := json.Unmarshal(m.Payload, &req); err != nil {
		t.Fatal(err)
	}
	if req.RequestID == "" {
		t.Fatalf("code request %s has no request_id; want one the answer can name", m.Payload)
	}
	return req
}

func wait(t *testing.T, res <-chan result) result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(gatewaytest.WaitLimit):
		t.Fatalf("Submit did not return within %s", gatewaytest.WaitLimit)
		return result{}
	}
}

// TestSubmitReturnsTheAnswerToItsRequest: Submit publishes the code with a
// request_id and returns the display that names it, not one for another
// request nor a payload that does not decode.
func TestSubmitReturnsTheAnswerToItsRequest(t *testing.T) {
	r := newRig(t)
	res := r.submit(t.Context(), "482913")
	req := r.request(t, "482913")

	r.ctl.Publish(contract.TopicScreenDisplay, contract.Display{RequestID: req.RequestID + "x", Result: contract.ResultOpened, Door: 2})
	r.ctl.Publish(contract.TopicScreenDisplay, contract.Display{RequestID: "r1", Result: contract.ResultOpened, Door: 3})
	r.ctl.Publish(contract.TopicScreenDisplay, "not json")
	want := contract.Display{RequestID: req.RequestID, Result: contract.ResultInvalidCode, Message: "Invalid code"}
	r.ctl.Publish(contract.TopicScreenDisplay, want)

	got := wait(t, res)
	if got.err != nil || got.d != want {
		t.Fatalf("Submit = %+v, %v; want %+v, nil", got.d, got.err, want)
	}
}

// TestConcurrentSubmitsGetTheirOwnAnswers: two codes entered at once get
// two request_ids, and each Submit the answer to its own, whatever the order
// the answers come in.
func TestConcurrentSubmitsGetTheirOwnAnswers(t *testing.T) {
	r := newRig(t)
	first, second := r.submit(t.Context(), "1111"), r.submit(t.Context(), "2222")
	req1, req2 := r.request(t, "1111"), r.request(t, "2222")
	if req1.RequestID == req2.RequestID {
		t.Fatalf("both codes have request_id %q; want one each", req1.RequestID)
	}
	want2 := contract.Display{RequestID: req2.RequestID, Result: contract.ResultOpened, Door: 2, Message: "Door 2 is open"}
	want1 := contract.Display{RequestID: req1.RequestID, Result: contract.ResultOpened, Door: 1, Message: "Door 1 is open"}
	r.ctl.Publish(contract.TopicScreenDisplay, want2)
	r.ctl.Publish(contract.TopicScreenDisplay, want1)
	if got := wait(t, first); got.err != nil || got.d != want1 {
		t.Errorf("Submit(1111) = %+v, %v; want %+v, nil", got.d, got.err, want1)
	}
	if got := wait(t, second); got.err != nil || got.d != want2 {
		t.Errorf("Submit(2222) = %+v, %v; want %+v, nil", got.d, got.err, want2)
	}
}

// TestSubmitWithoutAnAnswerEndsWithItsContext: when no answer comes before
// the context ends, Submit says so; the late answer is handed to no one, and
// the next Submit gets its own.
func TestSubmitWithoutAnAnswerEndsWithItsContext(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(t.Context())
	res := r.submit(ctx, "482913")
	late := r.request(t, "482913")
	cancel()
	got := wait(t, res)
	if !errors.Is(got.err, context.Canceled) || !strings.Contains(got.err.Error(), "no answer") {
		t.Fatalf("Submit with an ended context = %+v, %v; want an error that says no answer came, wrapping %v", got.d, got.err, context.Canceled)
	}

	next := r.submit(t.Context(), "555555")
	req := r.request(t, "555555")
	r.ctl.Publish(contract.TopicScreenDisplay, contract.Display{RequestID: late.RequestID, Result: contract.ResultOpened, Door: 7})
	want := contract.Display{RequestID: req.RequestID, Result: contract.ResultExpired, Message: "Code expired"}
	r.ctl.Publish(contract.TopicScreenDisplay, want)
	if got := wait(t, next); got.err != nil || got.d != want {
		t.Fatalf("Submit after a late answer = %+v, %v; want %+v, nil", got.d, got.err, want)
	}
}

// TestSubmitAfterItsContextEndedSendsNothing: a code whose request already
// ended is not published, so that no door opens for nobody waiting.
func TestSubmitAfterItsContextEndedSendsNothing(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.h.Submit(ctx, "111111"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit with an ended context: %v; want an error wrapping %v", err, context.Canceled)
	}
	// The next code goes out on the same path after it: once it is here,
	// the first would be here too had it been sent.
	next := r.submit(t.Context(), "222222")
	req := r.request(t, "222222")
	for _, m := range r.ctl.Received() {
		if strings.Contains(string(m.Payload), "111111") {
			t.Fatalf("the code of the ended request was published: %s", m.Payload)
		}
	}
	want := contract.Display{RequestID: req.RequestID, Result: contract.ResultExpired, Message: "Code expired"}
	r.ctl.Publish(contract.TopicScreenDisplay, want)
	if got := wait(t, next); got.err != nil || got.d != want {
		t.Fatalf("Submit = %+v, %v; want %+v, nil", got.d, got.err, want)
	}
}

func TestNewRefusesNoBroker(t *testing.T) {
	if h, err := screen.New(nil); err == nil {
		t.Fatalf("New(nil) = %v, nil; want an error saying the broker is required", h)
	}
}
