package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// sendCommand is send-reservation, send-door, send-command, or with no
// entity, send.
func sendCommand(entity string) func(fs *flag.FlagSet) func(context.Context, *call) error {
	return func(fs *flag.FlagSet) func(context.Context, *call) error {
		locker := fs.String("locker", "", "the locker's `id` (required)")
		body := fs.String("json", "", "the message, a `JSON` object (required)")
		entity := entity
		if entity == "" {
			fs.StringVar(&entity, "entity", "", "the `entity`: reservations, doors, partners, users, commands, sync or audit (required)")
		}
		return func(ctx context.Context, c *call) error { return send(ctx, c, *locker, entity, *body) }
	}
}

func send(ctx context.Context, c *call, locker, entity, body string) error {
	if !validID(locker) || !validID(entity) || body == "" {
		return usageError{errors.New("--locker, --json (and --entity for send) are required; ids may not contain '/', '+' or '#'")}
	}
	msgID, payload, err := newMessage(body)
	if err != nil {
		return err
	}

	o := c.o
	cl, err := dial(ctx, o)
	if err != nil {
		return err
	}
	defer cl.close()
	acks := "lockers/" + locker + "/up/acks"
	if err := cl.subscribe(ctx, o, acks); err != nil {
		return err
	}
	// What the broker holds retained says, if no ack comes, why.
	statusTopic := "lockers/" + locker + "/status"
	cl.subscribeIfAllowed(ctx, o, statusTopic)
	cl.subscribeIfAllowed(ctx, o, doorStateFilter)
	topic := "lockers/" + locker + "/down/" + entity
	pctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if _, err := cl.cli.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
		return fmt.Errorf("cannot publish on %s: %w", topic, err)
	}
	return awaitAck(ctx, c, cl, locker, msgID, statusTopic)
}

// newMessage reads the --json object and gives it a msg_id when it has none.
func newMessage(body string) (msgID string, payload []byte, err error) {
	var msg map[string]any
	if err := json.Unmarshal([]byte(body), &msg); err != nil {
		return "", nil, usageError{fmt.Errorf("--json is not a JSON object: %w", err)}
	}
	msgID, _ = msg["msg_id"].(string)
	if msgID == "" {
		msgID = "ctl-" + randomHex(6)
		msg["msg_id"] = msgID
	}
	payload, err = json.Marshal(msg)
	if err != nil {
		return "", nil, err
	}
	return msgID, payload, nil
}

// awaitAck prints the locker's ack of msgID and returns an error if it
// refused it; when none comes within --timeout, it says why from what the
// broker holds on statusTopic and whether the broker is a locker's own.
func awaitAck(ctx context.Context, c *call, cl *client, locker, msgID, statusTopic string) error {
	o := c.o
	var st *lockerStatus
	local := false
	wait := time.NewTimer(o.timeout)
	defer wait.Stop()
	for {
		select {
		case p := <-cl.got:
			switch {
			case p.Topic == statusTopic:
				st = &lockerStatus{}
				if json.Unmarshal(p.Payload, st) != nil {
					st = nil
				}
				continue
			case strings.HasPrefix(p.Topic, "locky/doors/"):
				local = true
				continue
			}
			var ack struct {
				MsgID string `json:"msg_id"`
				OK    bool   `json:"ok"`
			}
			if json.Unmarshal(p.Payload, &ack) != nil || ack.MsgID != msgID {
				continue
			}
			fmt.Fprintf(c.stdout, "%s\n", p.Payload)
			if !ack.OK {
				return fmt.Errorf("locker %s refused %s", locker, msgID)
			}
			return nil
		case <-wait.C:
			return noAck(o, locker, msgID, st, local)
		case <-cl.cli.Done():
			return fmt.Errorf("lost the connection to %s before the ack of %s came: %w; send it again (the locker ignores what it already applied)", o.url, msgID, cl.why())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// noAck says why no ack came, from the locker's retained status.
func noAck(o options, locker, msgID string, st *lockerStatus, local bool) error {
	none := fmt.Sprintf("no ack for %s from locker %s within %s", msgID, locker, o.timeout)
	switch {
	case st == nil && local:
		return fmt.Errorf("%s: %w", none, errLocalBroker(o.url))
	case st == nil:
		return fmt.Errorf("%s: no locker %s ever connected to %s (it has no lockers/%s/status), so nothing delivers the message: check --locker, and that --url is the cloud broker (lockyctl online --all lists the lockers it knows)",
			none, locker, o.url, locker)
	case st.State == "online":
		return fmt.Errorf("%s, though it is online (since %s): it may be slow or stuck; raise --timeout, or look at its log", none, st.At)
	default:
		return fmt.Errorf("%s: it is %s; the broker keeps the message in the locker's session and the locker applies it when it reconnects, if its session has not expired by then; its ack then comes on lockers/%s/up/acks",
			none, st.State, locker)
	}
}
