package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/handlers/contract"
)

// kiosk is the touchscreen: it enters a valid code every so often, each
// with a request id of its own, and after a reconnection sends again every
// code it has no answer to, with the same request id.
type kiosk struct {
	link *link
	pool *pool

	mu      sync.Mutex
	codes   map[string]*codeRecord // by request id
	answers []time.Time            // the first answer to each code, in order of arrival
	results map[string]int         // first answers by result
	starved int                    // times no door was free for a code
	failed  int                    // publishes that failed (the code is sent again on reconnection)
}

// codeRecord is one code entered on the screen.
type codeRecord struct {
	id, code string
	door     int
	sent     time.Time
	answered time.Time // zero until an answer came
}

func newKiosk(p *pool) *kiosk {
	k := &kiosk{pool: p, codes: map[string]*codeRecord{}, results: map[string]int{}}
	k.link = &link{name: "bench-kiosk", filters: []string{contract.TopicScreenDisplay}, onMsg: k.receive, onUp: k.resend}
	return k
}

// run enters a code every `every` until ctx ends.
func (k *kiosk) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		door, code, ok := k.pool.take()
		k.mu.Lock()
		if !ok {
			k.starved++
			k.mu.Unlock()
			continue
		}
		rec := &codeRecord{id: fmt.Sprintf("up-%d", n), code: code, door: door, sent: time.Now()}
		k.codes[rec.id] = rec
		k.mu.Unlock()
		go k.send(ctx, k.link.publish, rec)
	}
}

// send publishes rec's code. A failed publish is counted, not retried: the
// reconnection that must follow sends the code again (resend).
func (k *kiosk) send(ctx context.Context, pub func(context.Context, string, any, bool) error, rec *codeRecord) {
	if err := pub(ctx, contract.TopicScreenCode, contract.CodeRequest{Code: rec.code, RequestID: rec.id}, false); err != nil {
		k.mu.Lock()
		k.failed++
		k.mu.Unlock()
	}
}

// resend sends again, on the new connection c, every code not answered yet.
func (k *kiosk) resend(ctx context.Context, c *paho.Client) {
	k.mu.Lock()
	var todo []*codeRecord
	for _, rec := range k.codes {
		if rec.answered.IsZero() {
			todo = append(todo, rec)
		}
	}
	k.mu.Unlock()
	pub := func(ctx context.Context, topic string, v any, retain bool) error {
		return publishOn(ctx, c, topic, v, retain)
	}
	for _, rec := range todo {
		k.send(ctx, pub, rec)
	}
}

func (k *kiosk) receive(pr paho.PublishReceived) (bool, error) {
	at := time.Now()
	var d contract.Display
	if pr.Packet.Topic != contract.TopicScreenDisplay || json.Unmarshal(pr.Packet.Payload, &d) != nil {
		return true, nil
	}
	k.mu.Lock()
	rec := k.codes[d.RequestID]
	first := rec != nil && rec.answered.IsZero()
	if first {
		rec.answered = at
		k.answers = append(k.answers, at)
		k.results[d.Result]++
	}
	k.mu.Unlock()
	if rec != nil && d.Result == contract.ResultOpened {
		k.pool.opened(rec.door, at)
	}
	return true, nil
}

// answered returns how many codes have an answer.
func (k *kiosk) answered() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.answers)
}

// unanswered returns how many codes have no answer yet.
func (k *kiosk) unanswered() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.codes) - len(k.answers)
}

// codesBetween counts the codes entered in [from, to) and those of them
// answered.
func (k *kiosk) codesBetween(from, to time.Time) (sent, answered int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, rec := range k.codes {
		if !rec.sent.Before(from) && rec.sent.Before(to) {
			sent++
			if !rec.answered.IsZero() {
				answered++
			}
		}
	}
	return sent, answered
}

// longestGap returns the longest time between two consecutive answers from
// the last answer before from to the last one before to.
func (k *kiosk) longestGap(from, to time.Time) time.Duration {
	k.mu.Lock()
	answers := slices.Clone(k.answers)
	k.mu.Unlock()
	slices.SortFunc(answers, func(a, b time.Time) int { return a.Compare(b) })
	first := max(0, firstAtOrAfter(answers, from)-1)
	var gap time.Duration
	for i := first + 1; i < len(answers) && answers[i].Before(to); i++ {
		gap = max(gap, answers[i].Sub(answers[i-1]))
	}
	return gap
}

// firstAtOrAfter returns the index of the first time in sorted at or after t.
func firstAtOrAfter(sorted []time.Time, t time.Time) int {
	i, _ := slices.BinarySearchFunc(sorted, t, func(a, b time.Time) int { return a.Compare(b) })
	return i
}

// board is the door board: it opens a door on its command (reports it open
// at once, closed after hold) and, after a reconnection, reports the state
// of every door again, as a board does when it comes back online (unless
// told not to: a report that failed is then lost).
type board struct {
	link *link
	hold time.Duration
	ctx  context.Context
	pool *pool // told of each closed report

	mu     sync.Mutex
	doors  map[int]*boardDoor
	failed int // state publishes that failed
}

// boardDoor is one door of the board; mu orders its reports.
type boardDoor struct {
	mu    sync.Mutex
	state contract.DoorState
}

// newBoard returns the board; resync says whether it reports every door
// again after a reconnection.
func newBoard(ctx context.Context, p *pool, hold time.Duration, resync bool) *board {
	b := &board{hold: hold, ctx: ctx, pool: p, doors: map[int]*boardDoor{}}
	b.link = &link{name: "bench-board", filters: []string{contract.TopicDoorCommands}, onMsg: b.receive}
	if resync {
		b.link.onUp = b.reportAll
	}
	return b
}

func (b *board) receive(pr paho.PublishReceived) (bool, error) {
	door, err := contract.DoorFromTopic(pr.Packet.Topic, "command")
	if err != nil {
		return true, nil
	}
	go func() {
		b.report(door, contract.DoorOpen)
		time.AfterFunc(b.hold, func() {
			c := b.pool.closed(door, time.Now())
			if b.report(door, contract.DoorClosed) && c != nil {
				b.pool.acked(c)
			}
		})
	}()
	return true, nil
}

func (b *board) door(n int) *boardDoor {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.doors[n]
	if d == nil {
		d = &boardDoor{}
		b.doors[n] = d
	}
	return d
}

// report sets door's state and publishes it (retained); it returns whether
// the publish got its PUBACK.
func (b *board) report(door int, state string) bool {
	d := b.door(door)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = contract.DoorState{State: state, At: time.Now().UTC()}
	return b.publish(b.link.publish, door, d.state)
}

func (b *board) publish(pub func(context.Context, string, any, bool) error, door int, st contract.DoorState) bool {
	if err := pub(b.ctx, contract.DoorStateTopic(door), st, true); err != nil {
		b.mu.Lock()
		b.failed++ // reported again after the reconnection, if resync
		b.mu.Unlock()
		return false
	}
	return true
}

// reportAll publishes every door's state again on the new connection c.
func (b *board) reportAll(_ context.Context, c *paho.Client) {
	pub := func(ctx context.Context, topic string, v any, retain bool) error {
		return publishOn(ctx, c, topic, v, retain)
	}
	b.mu.Lock()
	doors := make(map[int]*boardDoor, len(b.doors))
	for n, d := range b.doors {
		doors[n] = d
	}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for n, d := range doors {
		wg.Go(func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			b.publish(pub, n, d.state)
		})
	}
	wg.Wait()
}
