package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// payloadSize is the size of every message of the broker runs. A message
// carries its sequence number and the time it was handed to the client.
const payloadSize = 64

// stallLimit ends a broker run when no message arrives for this long: the
// rest are counted as lost.
const stallLimit = 5 * time.Second

// brokerRun is one publisher → one subscriber run.
type brokerRun struct {
	sent, received int
	wall           time.Duration // first publish → last receive
	latency        sample        // publish call → receive, of the messages received
}

func (r brokerRun) rate() float64 { return float64(r.received) / r.wall.Seconds() }

// brokerResult is what brokerBench measures of one broker.
type brokerResult struct {
	flood     brokerRun // as fast as the client and the broker's in-flight window allow
	roundTrip brokerRun // one message at a time
	// receiveMax is the broker's receive maximum (its CONNACK): the QoS 1
	// messages a client may have in flight to it.
	receiveMax uint16
}

// flow records the messages of one topic as the subscriber receives them.
type flow struct {
	base time.Time // send times are nanoseconds since base (monotonic)
	tick chan struct{}

	mu   sync.Mutex
	seen []bool
	lat  sample
	last time.Time
}

func newFlow(base time.Time, n int) *flow {
	return &flow{base: base, tick: make(chan struct{}, 1), seen: make([]bool, n), lat: make(sample, 0, n)}
}

func (f *flow) receive(payload []byte) {
	now := time.Now()
	if len(payload) != payloadSize {
		return
	}
	seq := binary.BigEndian.Uint64(payload[8:16])
	sent := time.Duration(binary.BigEndian.Uint64(payload[:8]))
	f.mu.Lock()
	if seq < uint64(len(f.seen)) && !f.seen[seq] {
		f.seen[seq] = true
		f.lat = append(f.lat, now.Sub(f.base)-sent)
		f.last = now
	}
	f.mu.Unlock()
	select {
	case f.tick <- struct{}{}:
	default:
	}
}

// message returns the payload of message seq, stamped now.
func (f *flow) message(seq int) []byte {
	p := make([]byte, payloadSize)
	binary.BigEndian.PutUint64(p[:8], uint64(time.Since(f.base)))
	binary.BigEndian.PutUint64(p[8:16], uint64(seq))
	return p
}

// waitCount waits until n messages have arrived, or until none has arrived
// for stallLimit (they are lost). It returns how many arrived.
func (f *flow) waitCount(ctx context.Context, n int) (int, error) {
	for {
		f.mu.Lock()
		got := len(f.lat)
		f.mu.Unlock()
		if got >= n {
			return got, nil
		}
		t := time.NewTimer(stallLimit)
		select {
		case <-f.tick:
			t.Stop()
		case <-t.C:
			return got, nil
		case <-ctx.Done():
			t.Stop()
			return got, context.Cause(ctx)
		}
	}
}

func (f *flow) result(sent int, start time.Time) brokerRun {
	f.mu.Lock()
	defer f.mu.Unlock()
	return brokerRun{sent: sent, received: len(f.lat), wall: f.last.Sub(start), latency: f.lat}
}

// brokerBench runs, against the broker at addr, one publisher and one
// subscriber (QoS 1 both ways, 64-byte payloads): a flood of n messages
// published without waiting for each PUBACK, then roundTrips messages one at
// a time, each published once the previous one has arrived.
func brokerBench(ctx context.Context, addr string, n, roundTrips int) (brokerResult, error) {
	const floodTopic, rttTopic = "locky-bench/flood", "locky-bench/round-trip"
	base := time.Now()
	flows := map[string]*flow{floodTopic: newFlow(base, n), rttTopic: newFlow(base, roundTrips)}
	sub, err := connect(ctx, addr, "bench-subscriber", func(pr paho.PublishReceived) (bool, error) {
		if f := flows[pr.Packet.Topic]; f != nil {
			f.receive(pr.Packet.Payload)
		}
		return true, nil
	}, floodTopic, rttTopic)
	if err != nil {
		return brokerResult{}, err
	}
	defer disconnect(sub)
	pub, ca, err := connectAck(ctx, addr, "bench-publisher", func(paho.PublishReceived) (bool, error) { return true, nil })
	if err != nil {
		return brokerResult{}, err
	}
	defer disconnect(pub)
	var res brokerResult
	res.receiveMax = 65535 // MQTT 5's default when the CONNACK does not say
	if ca.Properties != nil && ca.Properties.ReceiveMaximum != nil {
		res.receiveMax = *ca.Properties.ReceiveMaximum
	}

	// AsyncSend returns once the message is in the client's session, which
	// blocks while the broker's receive-maximum window is full.
	async := paho.PublishOptions{Method: paho.PublishMethod_AsyncSend}
	send := func(f *flow, topic string, seq int) error {
		pctx, cancel := context.WithTimeout(ctx, answerLimit)
		defer cancel()
		if _, err := pub.PublishWithOptions(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: f.message(seq)}, async); err != nil {
			return fmt.Errorf("publish %d on %s: %w", seq, topic, err)
		}
		return nil
	}

	f := flows[floodTopic]
	start := time.Now()
	for seq := range n {
		if err := send(f, floodTopic, seq); err != nil {
			return res, err
		}
	}
	if _, err := f.waitCount(ctx, n); err != nil {
		return res, err
	}
	res.flood = f.result(n, start)

	res.roundTrip, err = roundTripRun(ctx, flows[rttTopic], func(f *flow, seq int) error { return send(f, rttTopic, seq) }, roundTrips)
	return res, err
}

// roundTripRun sends n messages of f one at a time, each once the previous
// one has arrived.
func roundTripRun(ctx context.Context, f *flow, send func(f *flow, seq int) error, n int) (brokerRun, error) {
	start := time.Now()
	for seq := range n {
		if err := send(f, seq); err != nil {
			return brokerRun{}, err
		}
		got, err := f.waitCount(ctx, seq+1)
		if err != nil {
			return brokerRun{}, err
		}
		if got <= seq {
			return brokerRun{}, fmt.Errorf("round trip %d: the message did not arrive within %s", seq, stallLimit)
		}
	}
	return f.result(n, start), nil
}

// disconnect ends a client at the end of a run; the broker may be gone
// already, so a failed DISCONNECT is of no interest.
func disconnect(c *paho.Client) { _ = c.Disconnect(&paho.Disconnect{}) }
