// Command lockyctl is the back-end's companion CLI for the locker fleet: it
// talks to the cloud MQTT broker, never to a locker directly; only audit
// --data-dir reads a stopped locker's data dir.
//
//	lockyctl [flags] send-reservation --locker ID --json '{"op":"upsert","reservation":{…}}'
//	lockyctl [flags] send-door        --locker ID --json '{"op":"upsert","door":{…}}'
//	lockyctl [flags] send-command     --locker ID --json '{"command":"open_door","door":7,"reason":"…"}'
//	lockyctl [flags] send             --locker ID --entity partners --json '{…}'
//	lockyctl [flags] watch  [--locker ID] [--count N]
//	lockyctl [flags] online
//	lockyctl hash-code --code-key-file FILE [CODE…]
//	lockyctl [flags] audit --locker ID [--after SEQ] [--json]
//	lockyctl audit --data-dir DIR [--code-key-file FILE] [--json]
//
// A send publishes on lockers/{id}/down/{entity} (with a generated msg_id if
// the JSON has none), waits for the matching ack on lockers/{id}/up/acks,
// prints it and exits 1 if it says ok=false or none came within --timeout.
// watch prints the events of lockers/+/up/events as JSON lines; online lists
// the lockers whose retained lockers/{id}/status is online. hash-code prints
// the hash of each code (the arguments, or the lines of stdin) under a
// locker's code key, as the locker computes it. audit prints the audit trail
// and its verification, asked of a running locker (locky/down/audit, answered
// on lockers/{id}/up/audit) or read from the database of a stopped gateway
// (or a copy); it exits 1 naming the first record that is not what the
// locker wrote.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // refused, timed out, or could not talk to the broker
	exitUsage = 2
)

const usage = `usage: lockyctl [flags] COMMAND [command flags]

commands:
  send-reservation --locker ID --json JSON   upsert or delete a reservation
  send-door        --locker ID --json JSON   upsert or delete a door
  send-command     --locker ID --json JSON   a support command (open_door)
  send --locker ID --entity ENTITY --json JSON
  watch [--locker ID] [--count N]            print events as JSON lines
  online                                     list the lockers that are online
  hash-code --code-key-file FILE [CODE...]   print each code's hash under the key (codes from stdin if none)
  audit --locker ID [--after SEQ]            print a locker's audit trail and the locker's verification of its seals
  audit --data-dir DIR [--code-key-file FILE] the same from a stopped locker's data dir, verified here

flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the connection flags common to every command.
type options struct {
	url, username, password   string
	caFile, certFile, keyFile string
	timeout                   time.Duration
}

// run runs one lockyctl command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("lockyctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&o.url, "url", envOr("LOCKYCTL_URL", "mqtt://127.0.0.1:1883"), "cloud broker, mqtt://host:port or mqtts://host:port (env LOCKYCTL_URL)")
	fs.StringVar(&o.username, "username", os.Getenv("LOCKYCTL_USERNAME"), "user name (env LOCKYCTL_USERNAME)")
	fs.StringVar(&o.password, "password", os.Getenv("LOCKYCTL_PASSWORD"), "password (env LOCKYCTL_PASSWORD)")
	fs.StringVar(&o.caFile, "ca-file", "", "PEM CA file for mqtts:// (default: the system's roots)")
	fs.StringVar(&o.certFile, "cert-file", "", "PEM client certificate for mqtts://")
	fs.StringVar(&o.keyFile, "key-file", "", "PEM client key for mqtts://")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the broker and for an ack")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	var err error
	switch cmd {
	case "send-reservation":
		err = send(ctx, o, "reservations", rest, stdout, stderr)
	case "send-door":
		err = send(ctx, o, "doors", rest, stdout, stderr)
	case "send-command":
		err = send(ctx, o, "commands", rest, stdout, stderr)
	case "send":
		err = send(ctx, o, "", rest, stdout, stderr)
	case "watch":
		err = watch(ctx, o, rest, stdout, stderr)
	case "online":
		err = online(ctx, o, rest, stdout, stderr)
	case "hash-code":
		err = hashCode(rest, os.Stdin, stdout, stderr)
	case "audit":
		err = audit(ctx, o, rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "lockyctl: unknown command %q\n", cmd)
		fs.Usage()
		return exitUsage
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "lockyctl %s: %s\n", cmd, err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "lockyctl %s: %s\n", cmd, err)
		return exitFail
	}
}

// usageError is a bad command line.
type usageError struct{ error }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// validID reports whether s can be one topic level.
func validID(s string) bool { return s != "" && !strings.ContainsAny(s, "/+#") }

func send(ctx context.Context, o options, entity string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	locker := fs.String("locker", "", "locker id (required)")
	body := fs.String("json", "", "the message, a JSON object (required)")
	if entity == "" {
		fs.StringVar(&entity, "entity", "", "reservations, doors, partners, users, commands, sync or audit (required)")
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if !validID(*locker) || !validID(entity) || *body == "" {
		return usageError{errors.New("--locker, --json (and --entity for send) are required; ids may not contain '/', '+' or '#'")}
	}
	var msg map[string]any
	if err := json.Unmarshal([]byte(*body), &msg); err != nil {
		return usageError{fmt.Errorf("--json is not a JSON object: %w", err)}
	}
	msgID, _ := msg["msg_id"].(string)
	if msgID == "" {
		msgID = "ctl-" + randomHex(6)
		msg["msg_id"] = msgID
	}
	payload, err := json.Marshal(msg)
	if err != nil {
		return err
	}

	c, err := dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.close()
	acks := "lockers/" + *locker + "/up/acks"
	if err := c.subscribe(ctx, o, acks); err != nil {
		return err
	}
	topic := "lockers/" + *locker + "/down/" + entity
	pctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if _, err := c.cli.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
		return fmt.Errorf("cannot publish on %s: %w", topic, err)
	}
	wait := time.NewTimer(o.timeout)
	defer wait.Stop()
	for {
		select {
		case p := <-c.got:
			var ack struct {
				MsgID string `json:"msg_id"`
				OK    bool   `json:"ok"`
			}
			if json.Unmarshal(p.Payload, &ack) != nil || ack.MsgID != msgID {
				continue
			}
			fmt.Fprintf(stdout, "%s\n", p.Payload)
			if !ack.OK {
				return fmt.Errorf("locker %s refused %s", *locker, msgID)
			}
			return nil
		case <-wait.C:
			return fmt.Errorf("no ack for %s from locker %s within %s: the locker may be offline; the message waits in its session and is applied when it reconnects",
				msgID, *locker, o.timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func watch(ctx context.Context, o options, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	locker := fs.String("locker", "+", "locker id (default: every locker)")
	count := fs.Int("count", 0, "exit after this many events (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *locker != "+" && !validID(*locker) {
		return usageError{errors.New("--locker may not contain '/', '+' or '#'")}
	}
	c, err := dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.close()
	filter := "lockers/" + *locker + "/up/events"
	if err := c.subscribe(ctx, o, filter); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "watching %s\n", filter)
	enc := json.NewEncoder(stdout)
	for n := 0; *count == 0 || n < *count; {
		select {
		case p := <-c.got:
			var ev map[string]any
			if err := json.Unmarshal(p.Payload, &ev); err != nil {
				fmt.Fprintf(stderr, "skipping a malformed event on %s: %s\n", p.Topic, err)
				continue
			}
			ev["locker"] = strings.Split(p.Topic, "/")[1]
			if err := enc.Encode(ev); err != nil {
				return err
			}
			n++
		case <-c.cli.Done():
			return errors.New("the broker closed the connection")
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

func online(ctx context.Context, o options, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("online", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	c, err := dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.subscribe(ctx, o, "lockers/+/status"); err != nil {
		return err
	}
	// The broker sends the retained statuses right after the SUBACK; a probe
	// published afterwards comes back after them all. Without the right to
	// publish the probe, the wait ends at --timeout.
	probe := "lockers/_lockyctl-" + randomHex(6) + "/probe"
	if err := c.subscribe(ctx, o, probe); err == nil {
		pctx, cancel := context.WithTimeout(ctx, o.timeout)
		_, _ = c.cli.Publish(pctx, &paho.Publish{Topic: probe, QoS: 1, Payload: []byte("{}")}) // a refusal means the timeout ends the wait
		cancel()
	}
	type status struct {
		State   string `json:"state"`
		Version string `json:"version"`
		At      string `json:"at"`
	}
	statuses := map[string]status{}
	wait := time.NewTimer(o.timeout)
	defer wait.Stop()
collect:
	for {
		select {
		case p := <-c.got:
			if p.Topic == probe {
				break collect
			}
			var st status
			if json.Unmarshal(p.Payload, &st) == nil {
				statuses[strings.Split(p.Topic, "/")[1]] = st
			}
		case <-wait.C:
			break collect
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ids := make([]string, 0, len(statuses))
	for id, st := range statuses {
		if st.State == "online" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(stdout, "%s\t%s\t%s\n", id, statuses[id].Version, statuses[id].At)
	}
	return nil
}

// client is one connection to the cloud broker.
type client struct {
	cli *paho.Client
	got chan *paho.Publish
}

func dial(ctx context.Context, o options) (*client, error) {
	u, err := url.Parse(o.url)
	if err != nil || u.Host == "" || (u.Scheme != "mqtt" && u.Scheme != "mqtts") {
		return nil, usageError{fmt.Errorf("--url %q: want mqtt://host:port or mqtts://host:port", o.url)}
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"mqtt": "1883", "mqtts": "8883"}[u.Scheme])
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var conn net.Conn
	d := &net.Dialer{}
	if u.Scheme == "mqtts" {
		tc, err := tlsConfig(o, u.Hostname())
		if err != nil {
			return nil, err
		}
		conn, err = (&tls.Dialer{NetDialer: d, Config: tc}).DialContext(ctx, "tcp", host)
		if err != nil {
			return nil, fmt.Errorf("cannot reach %s: %w", o.url, err)
		}
	} else if conn, err = d.DialContext(ctx, "tcp", host); err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", o.url, err)
	}
	c := &client{got: make(chan *paho.Publish, 1024)}
	c.cli = paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.got <- pr.Packet
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: "lockyctl-" + randomHex(6), KeepAlive: 30, CleanStart: true,
		Username: o.username, UsernameFlag: o.username != "", Password: []byte(o.password), PasswordFlag: o.password != ""}
	ca, err := c.cli.Connect(ctx, cp)
	if err != nil {
		if ca != nil && ca.ReasonCode >= 0x80 {
			return nil, fmt.Errorf("%s refused the connection: %s (check --username/--password)",
				o.url, (&packets.Connack{ReasonCode: ca.ReasonCode}).Reason())
		}
		return nil, fmt.Errorf("cannot connect to %s: %w", o.url, err)
	}
	return c, nil
}

func (c *client) subscribe(ctx context.Context, o options, filter string) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	sa, err := c.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		return fmt.Errorf("cannot subscribe to %s: %w", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		return fmt.Errorf("the broker refused the subscription to %s (reason codes %v): check the ACL of --username", filter, sa.Reasons)
	}
	return nil
}

func (c *client) close() {
	_ = c.cli.Disconnect(&paho.Disconnect{}) // exiting anyway
}

func tlsConfig(o options, serverName string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %q holds no PEM certificate", o.caFile)
		}
	}
	if o.certFile != "" || o.keyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file %q and --key-file %q: %w", o.certFile, o.keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
