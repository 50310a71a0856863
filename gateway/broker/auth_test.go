package broker

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// cheap are hash costs that keep the tests fast; the users file of a locker
// has DefaultArgon2's.
var cheap = Argon2Params{Memory: 64, Time: 1, Threads: 1}

func testUser(t testing.TB, name, role, pw string, ids ...string) User {
	t.Helper()
	h, err := HashPassword(pw, cheap)
	if err != nil {
		t.Fatal(err)
	}
	return User{Name: name, Role: role, PasswordHash: h, ClientIDs: ids}
}

func TestCovers(t *testing.T) {
	f := func(pattern, filter string, want bool) {
		t.Helper()
		if got := covers(pattern, filter); got != want {
			t.Errorf("covers(%q, %q) = %v; want %v", pattern, filter, got, want)
		}
	}
	f("locky/screen/code", "locky/screen/code", true)
	f("locky/screen/code", "locky/screen/display", false)
	f("locky/screen/code", "locky/screen/#", false)
	f("locky/doors/+/state", "locky/doors/7/state", true)
	f("locky/doors/+/state", "locky/doors/+/state", true)
	f("locky/doors/+/state", "locky/doors/#", false)
	f("locky/doors/7/command", "locky/doors/+/command", false)
	f("locky/doors/7/command", "locky/doors/8/command", false)
	f("locky/#", "locky/up/events", true)
	f("locky/#", "locky", true) // MQTT: a/# matches a itself
	f("locky/#", "other/x", false)
	f("#", "anything/at/all", true)
	f("locky/up/#", "locky/up/#", true)
	f("locky/up/#", "locky/#", false)
}

func TestReadUsersNamesTheBadLine(t *testing.T) {
	f := func(content, want string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "users")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadUsers(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadUsers(%q) error %v; want one containing %q", content, err, want)
		}
	}
	hash := testUser(t, "x", "screen", "pw").PasswordHash
	legacy := "8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92"
	f("kiosk screen\n", ":1: want `name role argon2id-hash")
	f("# users\nkiosk screen nothex\n", ":2: the password hash is no argon2id")
	f("kiosk screen "+legacy+"\n", "unsalted SHA-256, which is no longer accepted; write the line anew with: locky-gateway passwd kiosk screen")
	f("kiosk screen $2b$10$abcdefghijklmnopqrstuv\n", "no argon2id")
	f("kiosk screen $argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", "m=1: want 8 to")
	f("kiosk screen $argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", "m=1048576: want 8 to 65536 KiB")
	f("kiosk screen $argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", "want v=19")
	f("kiosk pilot "+hash+"\n", `role "pilot" is unknown`)
	f("d door:x "+hash+"\n", "want door:N")
	f("a screen "+hash+"\na observer "+hash+"\n", `:2: user "a" appears twice (line 1)`)
	f("door door:1 "+hash+"\ndoor-2 door:2 "+hash+"\n", "user door-2's client ids (door-2) overlap user door's")
	f("a screen "+hash+" kiosk*\nb observer "+hash+" kiosk-2\n", "overlap user a's")
	f("a screen "+hash+" inline\n", `client id "inline" is kept for the gateway`)
	f("a screen "+hash+" locky-gateway-*\n", "kept for the gateway")
	f("inline screen "+hash+"\n", "give the user other client ids")
	f("a screen "+hash+" k*x\n", "* only at the end")
	f("a screen "+hash+" a,,b\n", "* only at the end")
	f("a/b screen "+hash+"\n", "user name")
	f("a screen "+hash+" a b\n", "want `name role")
}

func TestUserLinesRoundTrip(t *testing.T) {
	f := func(u User) {
		t.Helper()
		got, err := ParseUser(u.Line())
		if err != nil {
			t.Fatalf("ParseUser(%q): %v", u.Line(), err)
		}
		if got.Line() != u.Line() {
			t.Errorf("ParseUser(%q).Line() = %q", u.Line(), got.Line())
		}
	}
	f(testUser(t, "kiosk", "screen", "pw"))
	f(testUser(t, "board", "doors", "pw", "board", "board-*", "door-board"))
	h, err := HashPassword("pw", DefaultArgon2())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("default hash %q; want OWASP's m=19456,t=2,p=1", h)
	}
	f(User{Name: "ops", Role: "observer", PasswordHash: h})
}

func TestClientIDPatterns(t *testing.T) {
	f := func(ids []string, id string, want bool) {
		t.Helper()
		u := User{Name: "kiosk", ClientIDs: ids}
		if got := u.mayUseClientID(id); got != want {
			t.Errorf("user kiosk with ids %q: may use %q = %v; want %v", ids, id, got, want)
		}
	}
	f(nil, "kiosk", true)
	f(nil, "kiosk-2", true)
	f(nil, "kiosk/main", true)
	f(nil, "kiosk2", false)
	f(nil, "kiosk-", true)
	f(nil, "door3", false)
	f(nil, "", false)
	f([]string{"screen-a"}, "kiosk", false)
	f([]string{"screen-a"}, "screen-a", true)
	f([]string{"screen-*"}, "screen-b", true)
	f([]string{"screen-*"}, "screen", false)
}

// TestRolesOnARealBroker connects real MQTT clients with each role and checks
// what the broker lets them do.
func TestRolesOnARealBroker(t *testing.T) {
	b := startBroker(t, Config{Users: []User{
		testUser(t, "kiosk", "screen", "k"),
		testUser(t, "door7", "door:7", "d"),
		testUser(t, "ops", "observer", "o"),
	}})
	refused := func(o opts, want byte) {
		t.Helper()
		if _, ca := tryConnect(t, b, o); ca == nil || ca.ReasonCode != want {
			t.Errorf("connect %+v: connack %+v; want reason %#x", o, ca, want)
		}
	}
	refused(opts{}, 0x86)
	refused(opts{user: "kiosk", pw: "wrong"}, 0x86)
	refused(opts{user: "nobody", pw: "k"}, 0x86)
	f := func(user, pw, topic string, write, want bool) {
		t.Helper()
		c := mustConnect(t, b, opts{user: user, pw: pw})
		if got := c.may(topic, write); got != want {
			t.Errorf("%s write=%v %s: allowed=%v; want %v", user, write, topic, got, want)
		}
	}
	f("kiosk", "k", "locky/screen/code", true, true)
	f("kiosk", "k", "locky/down/reservations", true, false)
	f("kiosk", "k", "locky/screen/display", false, true)
	f("kiosk", "k", "locky/#", false, false)
	f("door7", "d", "locky/doors/7/state", true, true)
	f("door7", "d", "locky/doors/8/state", true, false)
	f("door7", "d", "locky/doors/7/command", false, true)
	f("door7", "d", "locky/doors/+/command", false, false)
	f("ops", "o", "locky/#", false, false)
	f("ops", "o", "locky/up/#", false, true)
	f("ops", "o", "locky/screen/code", true, false)
}

// Every role against every topic and filter of the contract (and some
// outside it): publishes, subscriptions and Wills, against an oracle written
// out by hand rather than derived from the ACL code.
var (
	matrixTopics = []string{
		"locky/screen/code", "locky/screen/display",
		"locky/doors/3/command", "locky/doors/3/state", "locky/doors/5/command", "locky/doors/5/state",
		"locky/down/reservations", "locky/down/commands", "locky/down/doors", "locky/down/sync",
		"locky/up/acks", "locky/up/events", "locky/up/snapshot", "locky/other", "other/topic",
	}
	matrixFilters = []string{
		"#", "locky/#", "locky/+/code", "locky/screen/#", "locky/doors/#", "locky/doors/+/state",
		"locky/doors/+/command", "locky/doors/3/#", "locky/down/#", "locky/down/+", "locky/up/#",
		"+/screen/display", "+/#", "$SYS/#", "$share/g/locky/#", "$share/g/locky/up/#", "$share/g/locky/doors/3/command",
	}
	matrixRoles = []string{"screen", "door:3", "doors", "backend", "observer", "admin"}
)

// mayWrite is the oracle of publishes and Wills: topic names only.
func mayWrite(role, topic string) bool {
	switch role {
	case "screen":
		return topic == "locky/screen/code"
	case "door:3":
		return topic == "locky/doors/3/state"
	case "doors":
		return topic == "locky/doors/3/state" || topic == "locky/doors/5/state"
	case "backend":
		return strings.HasPrefix(topic, "locky/down/") && !strings.ContainsAny(topic, "+#")
	case "admin":
		return !strings.ContainsAny(topic, "+#")
	}
	return false
}

// mayRead is the oracle of subscriptions.
func mayRead(role, filter string) bool {
	switch role {
	case "screen":
		return filter == "locky/screen/display"
	case "door:3":
		return filter == "locky/doors/3/command"
	case "doors":
		return filter == "locky/doors/3/command" || filter == "locky/doors/5/command" || filter == "locky/doors/+/command"
	case "backend":
		return strings.HasPrefix(filter, "locky/up/")
	case "observer":
		doors := strings.HasPrefix(filter, "locky/doors/") && !strings.Contains(filter, "#") &&
			(strings.HasSuffix(filter, "/state") || strings.HasSuffix(filter, "/command"))
		return doors || strings.HasPrefix(filter, "locky/up/") || filter == "locky/screen/display"
	case "admin":
		return true
	}
	return false
}

func TestEveryRoleIsKeptToItsTopicsAndWills(t *testing.T) {
	var users []User
	for i, role := range matrixRoles {
		users = append(users, testUser(t, fmt.Sprintf("u%d", i), role, "pw"))
	}
	b := startBroker(t, Config{Users: users})
	for i, role := range matrixRoles {
		name := fmt.Sprintf("u%d", i)
		t.Run(role, func(t *testing.T) {
			c := mustConnect(t, b, opts{user: name, pw: "pw"})
			for _, topic := range matrixTopics {
				if got, want := c.may(topic, true), mayWrite(role, topic); got != want {
					t.Errorf("%s publish %s: allowed=%v; want %v", role, topic, got, want)
				}
			}
			for _, filter := range append(matrixTopics, matrixFilters...) {
				if got, want := c.may(filter, false), mayRead(role, filter); got != want {
					t.Errorf("%s subscribe %s: allowed=%v; want %v", role, filter, got, want)
				}
			}
			for _, topic := range append(matrixTopics, matrixFilters...) {
				for _, retain := range []bool{false, true} {
					o := opts{user: name, pw: "pw", will: &paho.WillMessage{Topic: topic, Payload: []byte("{}"), QoS: 1, Retain: retain}}
					wc, ca := tryConnect(t, b, o)
					// Only a door state may be retained.
					want := mayWrite(role, topic) && (!retain || covers("locky/doors/+/state", topic))
					switch {
					case want && wc == nil:
						t.Errorf("%s Will (retain=%v) on %s refused (%+v); want accepted", role, retain, topic, ca)
					case !want && (ca == nil || ca.ReasonCode != 0x87):
						t.Errorf("%s Will (retain=%v) on %s: connack %+v; want reason 0x87 not authorized", role, retain, topic, ca)
					}
					if wc != nil {
						wc.disconnect(t) // a clean DISCONNECT: the Will is not sent
					}
				}
			}
		})
	}
}

func TestWillOnAForbiddenTopicNeverReachesTheHandlers(t *testing.T) {
	b := startBroker(t, Config{Users: []User{testUser(t, "kiosk", "screen", "k"), testUser(t, "ops", "admin", "o")}})
	var got atomic.Int32
	for _, filter := range []string{"locky/down/#", "locky/doors/#"} {
		if err := b.Subscribe(filter, func(m contract.Message) { got.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	f := func(will paho.WillMessage) {
		t.Helper()
		if _, ca := tryConnect(t, b, opts{user: "kiosk", pw: "k", will: &will}); ca == nil || ca.ReasonCode != 0x87 {
			t.Fatalf("Will on %s: connack %+v; want 0x87", will.Topic, ca)
		}
	}
	f(paho.WillMessage{Topic: "locky/down/commands", Payload: []byte(`{"msg_id":"w","command":"open_door","door":7}`), QoS: 1})
	f(paho.WillMessage{Topic: "locky/doors/5/state", Payload: []byte(`{"state":"open"}`), QoS: 1, Retain: true})
	// A Will the kiosk may leave still goes out when its connection drops;
	// it arrives after anything the refused ones could have sent.
	seen := make(chan string, 1)
	if err := b.Subscribe("locky/screen/code", func(m contract.Message) { seen <- string(m.Payload) }); err != nil {
		t.Fatal(err)
	}
	c := mustConnect(t, b, opts{user: "kiosk", pw: "k", will: &paho.WillMessage{Topic: "locky/screen/code", Payload: []byte("bye"), QoS: 1}})
	c.drop()
	select {
	case p := <-seen:
		if p != "bye" {
			t.Fatalf("Will payload %q; want bye", p)
		}
	case <-time.After(waitLimit):
		t.Fatal("the permitted Will was not sent")
	}
	if n := got.Load(); n != 0 {
		t.Errorf("%d messages of refused Wills reached the handlers", n)
	}
	for topic := range b.srv.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, "locky/") {
			t.Errorf("a retained message on %s; want none", topic)
		}
	}
}

func TestWillIsCheckedAgainAsItIsSent(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: testenv.QuietLogger(t)})
	h, err := newAuthHook(srv, Config{Users: []User{testUser(t, "kiosk", "screen", "k")}, Logger: testenv.QuietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	f := func(user, topic string, retain, wantSent bool) {
		t.Helper()
		cl := &mqtt.Client{Properties: mqtt.ClientProperties{Username: []byte(user)}}
		will := mqtt.Will{TopicName: topic, Payload: []byte("x"), Retain: retain, Flag: 1}
		got, err := h.OnWill(cl, will)
		if err != nil {
			t.Fatal(err)
		}
		if sent := got.TopicName != ""; sent != wantSent || (!sent && got.Retain) {
			t.Errorf("%s Will on %s: sent as %+v; want sent=%v", user, topic, got, wantSent)
		}
	}
	f("kiosk", "locky/screen/code", false, true)
	f("kiosk", "locky/down/commands", false, false)
	f("kiosk", "locky/doors/5/state", true, false)
	f("", "locky/screen/code", false, false) // anonymous outside dev mode
	f("gone", "locky/screen/code", false, false)
}

func TestClientIDsAreBoundToUsers(t *testing.T) {
	b := startBroker(t, Config{AllowAnonymous: true, Users: []User{
		testUser(t, "kiosk", "screen", "k"),
		testUser(t, "door3", "door:3", "d"),
		testUser(t, "ops", "observer", "o", "monitor-*"),
	}})
	kiosk := mustConnect(t, b, opts{user: "kiosk", pw: "k", id: "kiosk"})
	f := func(o opts, want byte) {
		t.Helper()
		c, ca := tryConnect(t, b, o)
		if ca == nil || ca.ReasonCode != want {
			t.Errorf("connect %s as %q: connack %+v; want reason %#x", o.user, o.id, ca, want)
		}
		if c != nil {
			c.disconnect(t)
		}
	}
	f(opts{user: "door3", pw: "d", id: "kiosk"}, 0x85)   // another user's id
	f(opts{user: "door3", pw: "d", id: "inline"}, 0x85)  // the gateway's own
	f(opts{id: "inline"}, 0x85)                          // even anonymous in dev mode
	f(opts{id: "locky-gateway-1"}, 0x85)                 // the gateway's prefix
	f(opts{id: "kiosk"}, 0x85)                           // anonymous cannot kick the kiosk off
	f(opts{user: "ops", pw: "o", id: "ops"}, 0x85)       // not in its explicit ids
	f(opts{user: "ops", pw: "o", id: "monitor-1"}, 0)    // in them
	f(opts{user: "door3", pw: "d", id: "door3-main"}, 0) // the default: name-…
	f(opts{user: "door3", pw: "d", id: "door3/x"}, 0)    // or name/…
	f(opts{user: "door3", pw: "d", assign: true}, 0)     // or one the broker assigns
	f(opts{id: "anything"}, 0)                           // anonymous in dev mode
	if !kiosk.may("locky/screen/code", true) {
		t.Error("the kiosk was kicked off by a refused connect")
	}
}

func TestSessionIsNeverResumedByAnotherUser(t *testing.T) {
	b := startBroker(t, Config{AllowAnonymous: true, Users: []User{
		testUser(t, "ops", "observer", "o"), testUser(t, "admin", "admin", "a"),
	}})
	persistent := opts{user: "ops", pw: "o", id: "ops-1", resume: true, expiry: 600, subscribe: "locky/up/events"}
	ops := mustConnect(t, b, persistent)
	ops.disconnect(t)
	if err := b.Publish("locky/up/events", []byte("queued"), false, 1); err != nil {
		t.Fatal(err)
	}
	f := func(o opts) {
		t.Helper()
		c, ca := tryConnect(t, b, o)
		if ca == nil || ca.ReasonCode != 0x85 {
			t.Errorf("%q resuming ops's session: connack %+v; want reason 0x85", o.user, ca)
		}
		if c != nil {
			c.disconnect(t)
		}
	}
	f(opts{id: "ops-1", resume: true, expiry: 600})                         // anonymous (dev mode)
	f(opts{user: "admin", pw: "a", id: "ops-1", resume: true, expiry: 600}) // another user
	again, ca := tryConnect(t, b, opts{user: "ops", pw: "o", id: "ops-1", resume: true, expiry: 600})
	if again == nil || !ca.SessionPresent {
		t.Fatalf("ops resuming its own session: connack %+v; want session present", ca)
	}
	if p := again.await(t, "locky/up/events"); p != "queued" {
		t.Errorf("ops's queued message %q; want queued", p)
	}
}

// TestWrongPasswordsAreThrottled drives the throttle's clock: no sleeping.
func TestWrongPasswordsAreThrottled(t *testing.T) {
	clock := newFakeClock()
	b := startBroker(t, Config{Users: []User{testUser(t, "kiosk", "screen", "k"), testUser(t, "door3", "door:3", "d")}}, clock.now)
	f := func(o opts, want byte) {
		t.Helper()
		c, ca := tryConnect(t, b, o)
		if ca == nil || ca.ReasonCode != want {
			t.Fatalf("connect %s/%s from %s: connack %+v; want reason %#x", o.user, o.pw, o.from, ca, want)
		}
		if c != nil {
			c.disconnect(t)
		}
	}
	f(opts{user: "door3", pw: "d", from: "127.0.0.3"}, 0) // door3 is known at 127.0.0.3
	for range 5 {
		f(opts{user: "nobody", pw: "guess", from: "127.0.0.1"}, 0x86)
	}
	// 127.0.0.1 is blocked: even the right password is refused, at once.
	f(opts{user: "kiosk", pw: "k", from: "127.0.0.1"}, 0x9f)
	f(opts{user: "nobody", pw: "guess", from: "127.0.0.1"}, 0x9f)
	// Other addresses are not.
	f(opts{user: "kiosk", pw: "k", from: "127.0.0.2"}, 0)
	// The back-off passes; the next failure doubles it.
	clock.advance(time.Second)
	f(opts{user: "nobody", pw: "guess", from: "127.0.0.1"}, 0x86)
	clock.advance(time.Second)
	f(opts{user: "kiosk", pw: "k", from: "127.0.0.1"}, 0x9f)
	clock.advance(time.Second)
	f(opts{user: "kiosk", pw: "k", from: "127.0.0.1"}, 0)
	// The kiosk has logged in from 127.0.0.1: a guesser there blocks the
	// address for everyone else, not for the kiosk.
	f(opts{user: "nobody", pw: "guess", from: "127.0.0.1"}, 0x86)
	f(opts{user: "kiosk", pw: "k", from: "127.0.0.1"}, 0)
	f(opts{user: "door3", pw: "d", from: "127.0.0.1"}, 0x9f)

	// A user's failures block it from any address, for a shorter while.
	for i := range 10 {
		f(opts{user: "door3", pw: "guess", from: fmt.Sprintf("127.0.1.%d", i+1)}, 0x86)
	}
	f(opts{user: "door3", pw: "d", from: "127.0.0.4"}, 0x9f)
	f(opts{user: "door3", pw: "d", from: "127.0.0.3"}, 0) // where it logs in from
	clock.advance(time.Second)
	f(opts{user: "door3", pw: "d", from: "127.0.0.4"}, 0)
	if v := b.authFailures(t, "throttled"); v != 5 {
		t.Errorf("throttled refusals counted %v; want 5", v)
	}
	if v := b.authFailures(t, "password"); v != 10 {
		t.Errorf("wrong passwords counted %v; want 10", v)
	}
	if v := b.authFailures(t, "unknown_user"); v != 7 {
		t.Errorf("unknown users counted %v; want 7", v)
	}
}

// --- helpers

const waitLimit = 15 * time.Second

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testBroker is a broker on 127.0.0.1:0 with the test's users.
type testBroker struct {
	*Broker // nil when started with a clock
	srv     *mqtt.Server
	addr    string
	auth    *authHook // nil when started without a clock
}

// startBroker starts a broker with cfg. With a clock, the broker is
// assembled here as New assembles it, auth only, with the auth hook on that
// clock.
func startBroker(t *testing.T, cfg Config, clock ...func() time.Time) *testBroker {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = testenv.QuietLogger(t)
	if len(clock) == 0 {
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return &testBroker{Broker: b, srv: b.srv, addr: b.Addr()}
	}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: cfg.Logger})
	h, err := newAuthHook(srv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.now = clock[0]
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "tcp", Address: cfg.Addr})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testBroker{srv: srv, addr: tcp.Address(), auth: h}
}

func (b *testBroker) authFailures(t *testing.T, reason string) uint64 {
	t.Helper()
	if b.auth == nil {
		t.Fatal("authFailures needs a broker started with a clock")
	}
	return b.auth.failures[reason].Get()
}

type opts struct {
	user, pw, id string
	assign       bool // send no client id: the broker assigns one
	// from is the local address to connect from; empty means a fresh one
	// of 127.0.0.0/8, so that the tests' many connects meet no per-address
	// limit unless they mean to.
	from      string
	will      *paho.WillMessage
	resume    bool   // keep the session (CleanStart false)
	expiry    uint32 // session expiry interval, seconds
	subscribe string
}

type testClient struct {
	c    *paho.Client
	conn net.Conn
	got  chan *paho.Publish
	once sync.Once // paho's Disconnect hangs when called twice
}

var clientSeq, addrSeq atomic.Int64

// tryConnect connects with o; it returns the client if the broker accepted
// it, and the CONNACK if there was one.
func tryConnect(t *testing.T, b *testBroker, o opts) (*testClient, *paho.Connack) {
	t.Helper()
	if o.from == "" {
		n := addrSeq.Add(1)
		o.from = fmt.Sprintf("127.10.%d.%d", n/250%250, n%250+1)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(o.from)}}
	conn, err := d.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testClient{conn: conn, got: make(chan *paho.Publish, 64)}
	tc.c = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			select { // never block paho: clients subscribed to # get a lot
			case tc.got <- pr.Packet:
			default:
			}
			return true, nil
		},
	}})
	if o.id == "" && o.user != "" && !o.assign {
		o.id = fmt.Sprintf("%s-%d", o.user, clientSeq.Add(1))
	}
	cp := &paho.Connect{ClientID: o.id, CleanStart: !o.resume, KeepAlive: 30, WillMessage: o.will}
	if o.expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.expiry}
	}
	if o.user != "" {
		cp.Username, cp.UsernameFlag = o.user, true
		cp.Password, cp.PasswordFlag = []byte(o.pw), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ca, err := tc.c.Connect(ctx, cp)
	if err != nil || ca == nil || ca.ReasonCode != 0 {
		if ca == nil {
			t.Logf("connect %+v: %v", o, err)
		}
		return nil, ca
	}
	t.Cleanup(func() { tc.once.Do(func() { _ = tc.c.Disconnect(&paho.Disconnect{}) }) })
	if o.subscribe != "" && !tc.may(o.subscribe, false) {
		t.Fatalf("subscribe %s refused", o.subscribe)
	}
	return tc, ca
}

func mustConnect(t *testing.T, b *testBroker, o opts) *testClient {
	t.Helper()
	c, ca := tryConnect(t, b, o)
	if c == nil {
		t.Fatalf("connect %+v: connack %+v; want accepted", o, ca)
	}
	return c
}

// may reports whether the broker lets the client publish to (write) or
// subscribe to topic.
func (c *testClient) may(topic string, write bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if write {
		_, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("{}")})
		return err == nil
	}
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	return err == nil && len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80
}

func (c *testClient) disconnect(t *testing.T) {
	t.Helper()
	var err error
	c.once.Do(func() { err = c.c.Disconnect(&paho.Disconnect{}) })
	if err != nil {
		t.Fatal(err)
	}
	<-c.c.Done()
}

// drop cuts the connection without a DISCONNECT: the broker sends the Will.
func (c *testClient) drop() { c.once.Do(func() { _ = c.conn.Close() }) }

func (c *testClient) await(t *testing.T, topic string) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case p := <-c.got:
			if p.Topic == topic {
				return string(p.Payload)
			}
		case <-deadline:
			t.Fatalf("no message on %s", topic)
		}
	}
}

// dial connects a clean MQTT 5 client as user (anonymous if empty).
func dial(t *testing.T, addr, user, pw string) (*paho.Client, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: fmt.Sprintf("%s-%d", user, clientSeq.Add(1)), CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pw), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		return nil, err
	}
	if ca.ReasonCode != 0 {
		return nil, fmt.Errorf("refused: %#x", ca.ReasonCode)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, nil
}

func TestPasswdLinesAreReadBackAndLogIn(t *testing.T) {
	if _, err := NewUser("kiosk", "screen", "short", nil); err == nil || !strings.Contains(err.Error(), "openssl rand") {
		t.Errorf("a short password: error %v; want one saying how to make a long one", err)
	}
	if _, err := NewUser("kiosk", "pilot", "long-enough-password", nil); err == nil {
		t.Error("an unknown role was accepted")
	}
	u, err := NewUser("kiosk", "screen", "long-enough-password", nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("# the kiosk\n"+u.Line()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := ReadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, Config{Users: users})
	mustConnect(t, b, opts{user: "kiosk", pw: "long-enough-password"})
}

func TestMQTT3RefusalsUseMQTT3Codes(t *testing.T) {
	f := func(version byte, code packets.Code, want byte) {
		t.Helper()
		cl := &mqtt.Client{Properties: mqtt.ClientProperties{ProtocolVersion: version}}
		got := forVersion(cl, code)
		if v3, ok := packets.V5CodesToV3[got]; ok && version < 5 { // as mochi's SendConnack
			got = v3
		}
		if got.Code != want {
			t.Errorf("MQTT %d refusal %q sent as %#x; want %#x", version, code.Reason, got.Code, want)
		}
	}
	f(5, packets.ErrNotAuthorized, 0x87)
	f(5, packets.ErrConnectionRateExceeded, 0x9f)
	f(4, packets.ErrNotAuthorized, 0x05)
	f(4, packets.ErrBadUsernameOrPassword, 0x05)
	f(4, packets.ErrClientIdentifierNotValid, 0x02)
	f(4, packets.ErrConnectionRateExceeded, 0x03)
	f(3, packets.ErrServerBusy, 0x03)
}
