package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// errLinkDown is a publish's error while the link has no connection: the
// caller sends again once onUp says the link is back.
var errLinkDown = errors.New("no connection to the gateway's broker (reconnecting)")

// link is one MQTT client of the upgrades bench that reconnects at once
// when its connection drops, as a kiosk or a door board does, and records
// how long each reconnection took and which dials were refused.
type link struct {
	name, addr string
	filters    []string
	onMsg      func(paho.PublishReceived) (bool, error)
	// onUp, when set, runs in a goroutine of its own after each
	// reconnection (not the first connection), with the new client.
	onUp func(ctx context.Context, c *paho.Client)

	mu         sync.Mutex
	c          *paho.Client // nil while reconnecting
	reconnects []reconnect
	refused    []time.Time // dials that met ECONNREFUSED
}

// reconnect is one connection loss and the time to the next CONNACK.
type reconnect struct {
	lost time.Time
	took time.Duration
}

// connectFirst makes the link's first connection; run keeps it up.
func (l *link) connectFirst(ctx context.Context) error {
	c, err := l.dial(ctx)
	if err != nil {
		return err
	}
	l.set(c)
	return nil
}

// run reconnects the link each time its connection drops, until ctx ends.
func (l *link) run(ctx context.Context) error {
	for {
		c := l.client()
		select {
		case <-ctx.Done():
			disconnect(c)
			return nil
		case <-c.Done():
		}
		lost := time.Now()
		l.set(nil)
		c, err := l.dial(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.reconnects = append(l.reconnects, reconnect{lost: lost, took: time.Since(lost)})
		l.mu.Unlock()
		l.set(c)
		if l.onUp != nil {
			go l.onUp(ctx, c)
		}
	}
}

// dial connects and subscribes, trying again at once (1 ms apart) until it
// succeeds or waitLimit has passed.
func (l *link) dial(ctx context.Context) (*paho.Client, error) {
	deadline := time.Now().Add(waitLimit)
	for {
		c, _, err := connectAck(ctx, l.addr, l.name, l.onMsg, l.filters...)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			l.mu.Lock()
			l.refused = append(l.refused, time.Now())
			l.mu.Unlock()
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s could not reconnect to the gateway at %s within %s; is it running? %w", l.name, l.addr, waitLimit, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *link) set(c *paho.Client) {
	l.mu.Lock()
	l.c = c
	l.mu.Unlock()
}

func (l *link) client() *paho.Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c
}

// publish publishes v as JSON with QoS 1 on the current connection.
func (l *link) publish(ctx context.Context, topic string, v any, retain bool) error {
	c := l.client()
	if c == nil {
		return errLinkDown
	}
	return publishOn(ctx, c, topic, v, retain)
}

// publishOn is publish that gives up as soon as c's connection ends: paho
// would wait out the whole answerLimit for a PUBACK that cannot come.
func publishOn(ctx context.Context, c *paho.Client, topic string, v any, retain bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return publish(ctx, c, topic, v, retain)
}

// between returns the reconnection times and the refused dials of losses
// (and dials) in [from, to).
func (l *link) between(from, to time.Time) (sample, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s sample
	for _, r := range l.reconnects {
		if !r.lost.Before(from) && r.lost.Before(to) {
			s = append(s, r.took)
		}
	}
	refused := 0
	for _, t := range l.refused {
		if !t.Before(from) && t.Before(to) {
			refused++
		}
	}
	return s, refused
}
