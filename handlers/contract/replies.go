package contract

import "sync"

// Replies matches the answers that arrive on a topic (an ack by its msg_id,
// a display by its request_id) to the callers that published the request and
// wait for them. The zero value is ready to use; it is safe for concurrent
// use, and Answer never blocks the broker's goroutine that calls it.
type Replies[T any] struct {
	mu      sync.Mutex
	waiting map[string]chan T
}

// Expect registers a wait for the answer keyed key, before the request is
// published; done ends the wait and must be called.
func (r *Replies[T]) Expect(key string) (answer <-chan T, done func()) {
	ch := make(chan T, 1)
	r.mu.Lock()
	if r.waiting == nil {
		r.waiting = map[string]chan T{}
	}
	r.waiting[key] = ch
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.waiting, key)
		r.mu.Unlock()
	}
}

// Answer hands v to the caller waiting for key, if any; a second answer to
// the same key is dropped.
func (r *Replies[T]) Answer(key string, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiting[key]; ok {
		select {
		case ch <- v:
		default:
		}
	}
}
