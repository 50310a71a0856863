package bridge

import (
	"log/slog"

	"github.com/eclipse/paho.golang/paho"
)

// downstream returns the handler of the messages that the cloud broker sends
// on one connection. A message is acknowledged only once the local broker
// took it (and the store handlers committed it inside that publish). When the
// local broker refuses one, that message and every later one on the
// connection are left unacknowledged, and the link is dropped: the cloud
// broker sends them all again, in order, after the reconnect.
func (b *Bridge) downstream(c *conn) func(paho.PublishReceived) (bool, error) {
	return func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		if c.failed.Load() {
			return true, nil
		}
		topic, qos, ok := mapTopic(b.down, p.Topic)
		if !ok {
			b.m.downstreamErrs.Inc()
			b.downLog.Log(slog.LevelError, "downstream message on a topic that no Down mapping matches: dropped; fix the bridge mappings",
				"topic", p.Topic)
			b.ack(pr)
			return true, nil
		}
		if err := b.cfg.Local.Publish(topic, p.Payload, false, qos); err != nil {
			b.m.downstreamErrs.Inc()
			b.downLog.Log(slog.LevelError, "the local broker refused a downstream message; dropping the cloud link so that the cloud broker sends it again",
				"topic", topic, "error", err)
			c.failed.Store(true)
			_ = c.net.Close() // paho notices and ends the connection
			return true, nil
		}
		b.m.downstream.Inc()
		b.ack(pr)
		return true, nil
	}
}

func (b *Bridge) ack(pr paho.PublishReceived) {
	if err := pr.Client.Ack(pr.Packet); err != nil {
		// The connection is going down: the cloud broker sends it again.
		b.log.Debug("cannot acknowledge a downstream message", "topic", pr.Packet.Topic, "error", err)
	}
}
