package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

const watchHelp = `Prints the events of lockers/{id}/up/events (every locker's without --locker) as JSON lines,
each with its "locker" added, in the order each locker sent them.

A back-end consumer must not miss an event, so watch is a persistent session: it connects under
the same --client-id every time, with clean start off, and the broker keeps its subscription and
queues the events for it (QoS 1) for --session-expiry after it disconnects. When watch comes back,
it prints those first. It acknowledges an event only once it has written it. When the broker goes
away, watch reconnects with exponential back-off and jitter and goes on.

Delivery is at least once: after a kill or a lost link an event may come again; its event_id,
unique per locker, tells. Within one run watch skips an event it has just printed.

One client id is one consumer. A second watch with the same id takes the session over: the first
one exits 1 if the broker says so (MQTT 5 reason 0x8E); Mosquitto 2.0 just closes the older
connection, and the two take the session from each other, each missing what the other printed.
Give each consumer, and each --locker, its own --client-id; in a container, whose host name
changes, always give one. Exits 0 on Ctrl-C or SIGTERM, or after --count events.`

// Reconnection back-off: the pause doubles from retryMin after each failure
// in a row up to retryMax, each a random half to all of it. Only a link that
// stayed up stableLink starts it again from retryMin: one that the broker
// keeps closing soon after accepting it (a second watch with the same
// client id, on a broker that closes the older connection without saying
// why) is retried slower and slower, not in a tight loop.
const (
	retryMin   = 500 * time.Millisecond
	retryMax   = 30 * time.Second
	stableLink = time.Minute
)

// recentEvents is how many printed events watch remembers to skip repeats.
const recentEvents = 4096

func watchCommand(fs *flag.FlagSet) func(context.Context, *call) error {
	locker := fs.String("locker", "", "only the events of the locker with this `id` (default: every locker's)")
	count := fs.Int("count", 0, "exit after printing `n` events (0: run until interrupted)")
	clientID := fs.String("client-id", defaultClientID(), "the session's client `id`: the same for every run of one consumer, different for each consumer")
	expiry := fs.Duration("session-expiry", 7*24*time.Hour, "how long the broker keeps the session, and queues events for it, after watch disconnects")
	return func(ctx context.Context, c *call) error {
		switch {
		case *locker != "" && !validID(*locker):
			return usageError{errors.New("--locker may not contain '/', '+' or '#'")}
		case *count < 0:
			return usageError{errors.New("--count may not be negative")}
		case *clientID == "":
			return usageError{errors.New("--client-id may not be empty: the broker keeps the session under it")}
		case *expiry <= 0:
			return usageError{errors.New("--session-expiry must be positive: with none, the broker drops the session, and what comes while watch is away, when it disconnects")}
		}
		filter := "lockers/+/up/events"
		if *locker != "" {
			filter = "lockers/" + *locker + "/up/events"
		}
		w := &watcher{c: c, filter: filter, count: *count, sess: session{clientID: *clientID, expiry: *expiry, manualAck: true},
			enc: json.NewEncoder(c.stdout), seen: newRecent(recentEvents), stray: map[string]bool{}}
		return w.run(ctx)
	}
}

// defaultClientID is lockyctl-USER@HOST, what stays the same from one run to
// the next on one machine.
func defaultClientID() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname() // without it, the id is still one per user
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r) {
			return r
		}
		return '-'
	}, "lockyctl-"+name+"@"+host)
}

// watcher is one run of watch, across its connections.
type watcher struct {
	c        *call
	filter   string
	count    int
	sess     session
	enc      *json.Encoder
	seen     *recent
	stray    map[string]bool // topics of another filter in the session, already reported
	printed  int
	conns    int  // connections the broker accepted
	watching bool // a connection subscribed, and said so
	short    int  // links in a row that dropped soon after they came up
}

func (w *watcher) run(ctx context.Context) error {
	if err := checkCloud(ctx, w.c.o); err != nil {
		return err
	}
	failures := 0
	for {
		before, start := w.conns, time.Now()
		err := w.once(ctx)
		switch {
		case ctx.Err() != nil || errors.Is(err, errCounted):
			return nil
		case isTakeover(err):
			return fmt.Errorf("another consumer connected with client id %q and took the session over: give each consumer its own --client-id", w.sess.clientID)
		case !retryable(err, w.conns > 0):
			return err
		}
		hint := ""
		switch {
		case w.conns == before: // no link
		case time.Since(start) >= stableLink:
			failures, w.short = 0, 0
		default:
			if w.short++; w.short >= 2 {
				hint = fmt.Sprintf(" (again soon after it came up: is another watch running with client id %q? Each consumer needs its own)", w.sess.clientID)
			}
		}
		failures++
		pause := backoff(failures)
		fmt.Fprintf(w.c.stderr, "%s%s; reconnecting in %s\n", err, hint, pause.Round(time.Millisecond))
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// retryable reports whether err may pass. A refusal passes only once the
// broker has let us in: at the start it is a wrong flag.
func retryable(err error, connectedBefore bool) bool {
	var le linkError
	var re refusedError
	return errors.As(err, &le) || (connectedBefore && errors.As(err, &re))
}

func isTakeover(err error) bool {
	var d serverDisconnect
	return errors.As(err, &d) && d.code == packets.DisconnectSessionTakenOver
}

// backoff is the pause after the n-th failure in a row.
func backoff(n int) time.Duration {
	d := retryMin
	for i := 1; i < n && d < retryMax; i++ {
		d *= 2
	}
	d = min(d, retryMax)
	return d/2 + rand.N(d/2+1)
}

// checkCloud fails if --url is a locker's local broker, or refuses us: an
// error of the command line, better said at once than retried. A broker out
// of reach is left to the reconnection loop.
func checkCloud(ctx context.Context, o options) error {
	cl, err := dial(ctx, o)
	if err != nil {
		var le linkError
		if errors.As(err, &le) {
			return nil
		}
		return err
	}
	defer cl.close()
	v, err := cl.look(ctx, o, "lockers/+/status")
	if err == nil && v.local && len(v.statuses) == 0 {
		return errLocalBroker(o.url)
	}
	return nil
}

// once makes one connection and prints what comes until the connection
// ends, ctx is done or --count events are printed. It acknowledges an event
// only once written, and before it disconnects waits until the broker has
// been sent the acknowledgements, so that what it printed does not come
// again.
func (w *watcher) once(ctx context.Context) error {
	o := w.c.o
	cl, err := connect(ctx, o, w.sess)
	if err != nil {
		return err
	}
	defer cl.close()
	w.conns++
	if err := cl.subscribe(ctx, o, w.filter); err != nil {
		var refused subscriptionRefused
		if errors.As(err, &refused) {
			return err
		}
		t := time.NewTimer(o.timeout) // the connection fails: wait for why
		defer t.Stop()
		select {
		case <-cl.cli.Done():
			if isTakeover(cl.why()) {
				return cl.why()
			}
		case <-t.C:
		}
		return linkError{err}
	}
	w.sayConnected(cl)
	var acked int64 // acknowledgements to send on this connection
	for {
		select {
		case p := <-cl.got:
			if err := w.handle(ctx, cl, p); err != nil {
				return err
			}
			if p.QoS > 0 && cl.cli.Ack(p) == nil {
				acked++
			}
			if w.count > 0 && w.printed >= w.count {
				cl.waitAcks(o, acked)
				return errCounted
			}
		case <-cl.cli.Done():
			err := cl.why()
			if isTakeover(err) {
				return err
			}
			return linkError{fmt.Errorf("lost the connection to %s: %w", o.url, err)}
		case <-ctx.Done():
			cl.waitAcks(o, acked)
			return ctx.Err()
		}
	}
}

// sayConnected tells on stderr what the broker kept of the session.
func (w *watcher) sayConnected(cl *client) {
	id, out, first := w.sess.clientID, w.c.stderr, !w.watching
	w.watching = true
	switch {
	case first && cl.sessionPresent:
		fmt.Fprintf(out, "watching %s on %s as client id %q: its session resumed, what the lockers sent while it was away comes first\n", w.filter, w.c.o.url, id)
	case first:
		fmt.Fprintf(out, "watching %s on %s as client id %q: a new session, kept %s after a disconnect\n", w.filter, w.c.o.url, id, cl.expiry)
	case cl.sessionPresent:
		fmt.Fprintf(out, "reconnected to %s: session resumed\n", w.c.o.url)
	default:
		fmt.Fprintf(out, "reconnected to %s, but the broker no longer had the session of %q: events sent while watch was disconnected are lost to it (the broker restarted without persistence, or the session expired)\n", w.c.o.url, id)
	}
	if cl.expiry < w.sess.expiry {
		fmt.Fprintf(out, "the broker keeps the session only %s after a disconnect, not the %s of --session-expiry: events sent during a longer absence are lost\n", cl.expiry, w.sess.expiry)
	}
}

// handle prints one event, or skips it with a note on stderr.
func (w *watcher) handle(ctx context.Context, cl *client, p *paho.Publish) error {
	level := strings.Split(p.Topic, "/")
	if len(level) != 4 || level[0] != "lockers" || level[2] != "up" || level[3] != "events" || !w.matches(level[1]) {
		w.strayTopic(ctx, cl, p.Topic)
		return nil
	}
	var ev map[string]any
	if err := json.Unmarshal(p.Payload, &ev); err != nil {
		fmt.Fprintf(w.c.stderr, "skipping a malformed event on %s: %s\n", p.Topic, err)
		return nil
	}
	if id, _ := ev["event_id"].(string); id != "" && !w.seen.add(level[1]+"/"+id) {
		return nil // a repeat of one just printed
	}
	ev["locker"] = level[1]
	if err := w.enc.Encode(ev); err != nil {
		return fmt.Errorf("cannot write the events: %w", err)
	}
	w.printed++
	return nil
}

func (w *watcher) matches(locker string) bool {
	return w.filter == "lockers/+/up/events" || w.filter == "lockers/"+locker+"/up/events"
}

// strayTopic handles a message of another subscription of the session,
// left by an earlier watch with another --locker and the same client id: it
// is skipped, and the subscriptions it may come from are dropped.
func (w *watcher) strayTopic(ctx context.Context, cl *client, topic string) {
	if w.stray[topic] {
		return
	}
	w.stray[topic] = true
	fmt.Fprintf(w.c.stderr, "skipping %s: the session of client id %q was also subscribed to it by an earlier watch; unsubscribing (give each --locker its own --client-id)\n",
		topic, w.sess.clientID)
	var filters []string
	for _, f := range []string{topic, "lockers/+/up/events"} {
		if f != w.filter {
			filters = append(filters, f)
		}
	}
	if len(filters) == 0 {
		return
	}
	uctx, cancel := context.WithTimeout(ctx, w.c.o.timeout)
	defer cancel()
	if _, err := cl.cli.Unsubscribe(uctx, &paho.Unsubscribe{Topics: filters}); err != nil {
		fmt.Fprintf(w.c.stderr, "cannot unsubscribe from %s: %s\n", strings.Join(filters, ", "), err)
	}
}

// recent is a bounded set of the latest keys added.
type recent struct {
	keys []string
	next int
	set  map[string]struct{}
}

func newRecent(n int) *recent {
	return &recent{keys: make([]string, 0, n), set: make(map[string]struct{}, n)}
}

// add adds k and reports whether it was not there yet.
func (r *recent) add(k string) bool {
	if _, ok := r.set[k]; ok {
		return false
	}
	if len(r.keys) < cap(r.keys) {
		r.keys = append(r.keys, k)
	} else {
		delete(r.set, r.keys[r.next])
		r.keys[r.next] = k
		r.next = (r.next + 1) % len(r.keys)
	}
	r.set[k] = struct{}{}
	return true
}
