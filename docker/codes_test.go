package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

// codeStream is a touchscreen that enters code every 20 ms, as a kiosk
// would: it reconnects at once when the gateway goes away and enters again
// each code not answered yet, so a code is lost only if the gateway never
// answers it.
type codeStream struct {
	addr, code string
	cancel     context.CancelFunc
	done       chan struct{}

	mu       sync.Mutex
	next     int
	answered map[string]bool // by request id
}

func startCodes(t *testing.T, addr, code string) *codeStream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &codeStream{addr: addr, code: code, cancel: cancel, done: make(chan struct{}), answered: map[string]bool{}}
	go func() {
		defer close(s.done)
		for ctx.Err() == nil {
			s.session(ctx, true)
		}
	}()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// session connects once, enters again the codes not answered, then (if
// more) enters a new code every 20 ms until the connection or ctx ends;
// otherwise it waits for the answers.
func (s *codeStream) session(ctx context.Context, more bool) {
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", s.addr)
	if err != nil {
		time.Sleep(5 * time.Millisecond) // the gateway is between two processes
		return
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){s.receive}})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Connect(cctx, &paho.Connect{ClientID: "mender-test-screen", CleanStart: true, KeepAlive: 30}); err != nil {
		conn.Close()
		return
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: contract.TopicScreenDisplay, QoS: 1}}}); err != nil {
		return
	}
	for _, id := range s.unanswered() { // entered again after a reconnection
		if s.enter(ctx, c, id) != nil {
			return
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Done():
			return
		case <-tick.C:
		}
		if !more {
			if len(s.unanswered()) == 0 {
				return
			}
			continue
		}
		s.mu.Lock()
		s.next++
		id := fmt.Sprintf("c-%d", s.next)
		s.answered[id] = false
		s.mu.Unlock()
		if s.enter(ctx, c, id) != nil {
			return
		}
	}
}

func (s *codeStream) enter(ctx context.Context, c *paho.Client, id string) error {
	b, _ := json.Marshal(contract.CodeRequest{Code: s.code, RequestID: id})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.Publish(pctx, &paho.Publish{Topic: contract.TopicScreenCode, QoS: 1, Payload: b})
	return err
}

func (s *codeStream) receive(pr paho.PublishReceived) (bool, error) {
	var d contract.Display
	if json.Unmarshal(pr.Packet.Payload, &d) == nil {
		s.mu.Lock()
		if _, ok := s.answered[d.RequestID]; ok {
			s.answered[d.RequestID] = true
		}
		s.mu.Unlock()
	}
	return true, nil
}

func (s *codeStream) unanswered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, ok := range s.answered {
		if !ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// stop stops entering new codes and waits (a bounded wait) for the answers
// of those entered, entering them again while they are missing; it returns
// how many were entered and how many were never answered.
func (s *codeStream) stop() (entered, lost int) {
	s.cancel()
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), gatewaytest.WaitLimit)
	defer cancel()
	for len(s.unanswered()) > 0 && ctx.Err() == nil {
		s.session(ctx, false)
	}
	s.mu.Lock()
	entered = len(s.answered)
	s.mu.Unlock()
	return entered, len(s.unanswered())
}
