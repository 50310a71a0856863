package broker

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/locky-edge/locky/gateway/linefile"
)

// User is a client allowed on the local broker.
type User struct {
	Name string
	// Role decides the topics the user may use (SPEC §6):
	//   screen     publish locky/screen/code, read locky/screen/display
	//   door:N     read locky/doors/N/command, publish locky/doors/N/state
	//   doors      the same for every door (a board driving many doors)
	//   backend    publish locky/down/#, read locky/up/# (an external bridge)
	//   observer   read locky/doors/+/state, locky/doors/+/command,
	//              locky/up/# and locky/screen/display: not locky/down/#
	//              (the back-end's upserts carry plain codes) nor
	//              locky/screen/code (the codes typed on the kiosk)
	//   admin      everything
	// A Will is a publish: it must lie in the topics the role may publish.
	// Whatever the role, a network client may retain (a publish or a Will)
	// only on locky/doors/+/state, the door boards' states.
	Role string
	// MaxClients bounds the clients connected at once with this user; the
	// next gets CONNACK 0x97 Quota exceeded (0x03 in MQTT 3.1.1). Zero
	// means DefaultMaxPerUser (see WithMaxClients).
	MaxClients int
	// PasswordHash is the argon2id hash of the password as HashPassword
	// writes it (a PHC string).
	PasswordHash string
	// ClientIDs are the client ids the user may connect with: an exact id,
	// or a prefix ending in "*". Empty means the user's name, or the name
	// followed by "-" or "/" and anything (kiosk, kiosk-2, kiosk/main). Two
	// users may not share a client id. An empty client id is always allowed:
	// the broker assigns a fresh one.
	ClientIDs []string
}

// The client ids the broker keeps for the gateway itself: no network client
// may use them, whatever its user.
const (
	reservedClientID       = mqtt.InlineClientId // the gateway's handlers
	reservedClientIDPrefix = "locky-gateway"     // the gateway's own future clients
)

func isReservedClientID(id string) bool {
	return id == reservedClientID || strings.HasPrefix(id, reservedClientIDPrefix)
}

// acl is the topics of a role: filters it may publish to and read from.
type acl struct{ write, read []string }

func roleACL(role string) (acl, error) {
	switch {
	case role == "screen":
		return acl{write: []string{"locky/screen/code"}, read: []string{"locky/screen/display"}}, nil
	case role == "doors":
		return acl{write: []string{"locky/doors/+/state"}, read: []string{"locky/doors/+/command"}}, nil
	case strings.HasPrefix(role, "door:"):
		n, err := strconv.Atoi(strings.TrimPrefix(role, "door:"))
		if err != nil || n <= 0 {
			return acl{}, fmt.Errorf("role %q: want door:N with N a door number", role)
		}
		d := strconv.Itoa(n)
		return acl{write: []string{"locky/doors/" + d + "/state"}, read: []string{"locky/doors/" + d + "/command"}}, nil
	case role == "backend":
		return acl{write: []string{"locky/down/#"}, read: []string{"locky/up/#"}}, nil
	case role == "observer":
		return acl{read: []string{"locky/doors/+/state", "locky/doors/+/command", "locky/up/#", "locky/screen/display"}}, nil
	case role == "admin":
		return acl{write: []string{"#"}, read: []string{"#"}}, nil
	}
	return acl{}, fmt.Errorf("role %q is unknown; use screen, door:N, doors, backend, observer or admin", role)
}

// clientIDs returns the client-id patterns of u.
func (u User) clientIDs() []string {
	if len(u.ClientIDs) > 0 {
		return u.ClientIDs
	}
	return []string{u.Name, u.Name + "-*", u.Name + "/*"}
}

// mayUseClientID reports whether u may connect as id.
func (u User) mayUseClientID(id string) bool {
	for _, p := range u.clientIDs() {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(id, prefix) || p == id {
			return true
		}
	}
	return false
}

// sharedClientID returns a client id pattern of a that overlaps one of b's.
func sharedClientID(a, b User) (string, bool) {
	for _, p := range a.clientIDs() {
		for _, q := range b.clientIDs() {
			pp, pw := strings.CutSuffix(p, "*")
			qp, qw := strings.CutSuffix(q, "*")
			if pw && strings.HasPrefix(q, pp) || qw && strings.HasPrefix(p, qp) || p == q {
				return p, true
			}
		}
	}
	return "", false
}

// validName is the alphabet of user names and client ids in the users file.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/:@", r)) {
			return false
		}
	}
	return true
}

// check validates u on its own (not against other users).
func (u User) check() error {
	if !validName(u.Name) || strings.Contains(u.Name, "/") {
		return fmt.Errorf("user name %q: use letters, digits and . _ - : @", u.Name)
	}
	if isReservedClientID(u.Name) && len(u.ClientIDs) == 0 {
		return fmt.Errorf("user %s: the client id %q is kept for the gateway; give the user other client ids", u.Name, u.Name)
	}
	if _, err := roleACL(u.Role); err != nil {
		return err
	}
	for _, p := range u.ClientIDs {
		prefix, _ := strings.CutSuffix(p, "*")
		if prefix != "" && !validName(prefix) || p == "" {
			return fmt.Errorf("client id %q: use letters, digits and . _ - / : @, and * only at the end", p)
		}
		if p == reservedClientID || strings.HasPrefix(prefix, reservedClientIDPrefix) {
			return fmt.Errorf("client id %q is kept for the gateway; choose another", p)
		}
	}
	if _, err := parsePasswordHash(u.PasswordHash); err != nil {
		if errors.Is(err, errLegacyHash) {
			return fmt.Errorf("%w; write the line anew with: locky-gateway passwd %s %s", err, u.Name, u.Role)
		}
		return fmt.Errorf("%w; write the line with: locky-gateway passwd %s %s", err, u.Name, u.Role)
	}
	return nil
}

// checkAgainst validates that u and an earlier user v can live in one file.
func (u User) checkAgainst(v User) error {
	if u.Name == v.Name {
		return fmt.Errorf("user %q appears twice", u.Name)
	}
	if p, ok := sharedClientID(u, v); ok {
		return fmt.Errorf("user %s's client ids (%s) overlap user %s's: rename one or give them explicit client ids", u.Name, p, v.Name)
	}
	return nil
}

// ParseUser parses one line of a users file:
//
//	name role argon2id-hash [client-ids]
//
// with client-ids a comma-separated list of ids, each exact or a prefix
// ending in "*" (see User). `locky-gateway passwd` writes such lines.
func ParseUser(line string) (User, error) {
	fields := strings.Fields(line)
	if len(fields) != 3 && len(fields) != 4 {
		return User{}, errors.New("want `name role argon2id-hash [client-ids]`; write the line with: locky-gateway passwd NAME ROLE")
	}
	u := User{Name: fields[0], Role: fields[1], PasswordHash: fields[2]}
	if len(fields) == 4 {
		u.ClientIDs = strings.Split(fields[3], ",")
	}
	if err := u.check(); err != nil {
		return User{}, err
	}
	return u, nil
}

// minPasswordLen is the shortest password NewUser accepts.
const minPasswordLen = 12

// NewUser returns a user with the hash of password at DefaultArgon2's
// costs, checked as ReadUsers checks a line: what `locky-gateway passwd`
// writes.
func NewUser(name, role, password string, clientIDs []string) (User, error) {
	if len(password) < minPasswordLen {
		return User{}, fmt.Errorf("the password has %d characters: use at least %d, e.g. a random one from: openssl rand -base64 18", len(password), minPasswordLen)
	}
	h, err := HashPassword(password, DefaultArgon2())
	if err != nil {
		return User{}, err
	}
	u := User{Name: name, Role: role, PasswordHash: h, ClientIDs: clientIDs}
	if err := u.check(); err != nil {
		return User{}, err
	}
	return u, nil
}

// WithMaxClients returns users with MaxClients set to n (--mqtt-max-per-user)
// where it is zero.
func WithMaxClients(users []User, n int) []User {
	out := make([]User, len(users))
	for i, u := range users {
		if u.MaxClients == 0 {
			u.MaxClients = n
		}
		out[i] = u
	}
	return out
}

// maxClients returns the clients of u allowed at once.
func (u User) maxClients() int {
	if u.MaxClients > 0 {
		return u.MaxClients
	}
	return DefaultMaxPerUser
}

// Line returns u as a line of a users file.
func (u User) Line() string {
	s := u.Name + " " + u.Role + " " + u.PasswordHash
	if len(u.ClientIDs) > 0 {
		s += " " + strings.Join(u.ClientIDs, ",")
	}
	return s
}

// ReadUsers reads a users file: one ParseUser line per user, # for comments.
func ReadUsers(path string) ([]User, error) {
	var out []User
	var lines []int
	err := linefile.Read(path, "the MQTT users file", func(n int, line string) error {
		u, err := ParseUser(line)
		if err != nil {
			return err
		}
		for i, v := range out {
			if err := u.checkAgainst(v); err != nil {
				return fmt.Errorf("%w (line %d)", err, lines[i])
			}
		}
		out, lines = append(out, u), append(lines, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// maxHashing bounds the password hashes computed at once (each takes the
// memory of its argon2id cost); hashWait is how long a login waits for its
// turn before it is refused as busy.
const (
	maxHashing = 2
	hashWait   = 10 * time.Second
)

// authHook authenticates users, binds client ids and sessions to them and
// enforces their role's topics on publishes, subscriptions and Wills.
// Anonymous clients get every topic only when allowAnonymous (dev mode).
//
// Every check of a CONNECT is in OnConnect, which can refuse it with the
// reason that fits (mochi's OnConnectAuthenticate can only answer "bad user
// name or password"); OnConnectAuthenticate then lets through exactly the
// clients OnConnect accepted.
type authHook struct {
	mqtt.HookBase
	srv            *mqtt.Server
	users          map[string]User
	hashes         map[string]passwordHash
	acls           map[string]acl
	allowAnonymous bool
	log            *slog.Logger
	now            func() time.Time

	throttle *loginThrottle
	hashing  chan struct{} // a token per hash computed now
	mu       sync.Mutex
	accepted map[*mqtt.Client]time.Time // passed OnConnect, when
	subs     *subscriptionLimits

	failures   map[string]*metrics.Counter // by reason
	maxPerUser *metrics.Counter
	pubRefused map[string]*metrics.Counter // by reason, publishRefusedReasons
	logs       logLimiter
}

// The reasons of locky_broker_auth_failures_total.
// A user name is no secret on a locker (it is in the kiosk's and the boards'
// configuration): an unknown one is refused at once, without the hash, as
// "unknown_user".
var authFailureReasons = []string{"anonymous", "unknown_user", "password", "throttled", "busy", "client_id", "session", "will"}

// The reasons of locky_broker_publishes_refused_total.
const (
	reasonRetainedTopic = "retained_topic" // retained outside retainTopics
	reasonTopicTooLong  = "topic_too_long" // over maxTopicLen
)

var publishRefusedReasons = []string{reasonRetainedTopic, reasonTopicTooLong}

// retainTopics is the filter of the topics a network client may retain on:
// the door boards' states. A retained message anywhere else (a code, a
// command, an upsert) would be replayed to every later subscriber.
const retainTopics = "locky/doors/+/state"

// maxTopicLen bounds the topic name of a client's publish or Will, in bytes;
// the contract's longest is far below it.
const maxTopicLen = 256

func newAuthHook(srv *mqtt.Server, cfg Config) (*authHook, error) {
	set := cfg.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &authHook{
		srv: srv, users: map[string]User{}, hashes: map[string]passwordHash{}, acls: map[string]acl{},
		allowAnonymous: cfg.AllowAnonymous, log: log.With("component", "broker-auth"), now: time.Now,
		hashing: make(chan struct{}, maxHashing), failures: map[string]*metrics.Counter{},
		accepted: map[*mqtt.Client]time.Time{}, pubRefused: map[string]*metrics.Counter{},
		maxPerUser: set.NewCounter(`locky_broker_connections_refused_total{reason="max_per_user"}`),
		subs:       newSubscriptionLimits(set),
	}
	h.throttle = newLoginThrottle(func() time.Time { return h.now() })
	h.logs.now = h.throttle.now
	for i, u := range cfg.Users {
		if err := u.check(); err != nil {
			return nil, fmt.Errorf("user %s: %w", u.Name, err)
		}
		for _, v := range cfg.Users[:i] {
			if err := u.checkAgainst(v); err != nil {
				return nil, err
			}
		}
		h.users[u.Name] = u
		h.hashes[u.Name], _ = parsePasswordHash(u.PasswordHash) // checked above
		h.acls[u.Name], _ = roleACL(u.Role)
	}
	for _, r := range authFailureReasons {
		h.failures[r] = set.NewCounter(`locky_broker_auth_failures_total{reason="` + r + `"}`)
	}
	for _, r := range publishRefusedReasons {
		h.pubRefused[r] = set.NewCounter(`locky_broker_publishes_refused_total{reason="` + r + `"}`)
	}
	return h, nil
}

func (h *authHook) ID() string { return "locky-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnWill ||
		b == mqtt.OnPublish || b == mqtt.OnSubscribe || b == mqtt.OnPacketEncode || b == mqtt.OnDisconnect
}

// OnConnect admits or refuses a CONNECT, answering a refusal itself.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	code, reason := h.admit(cl, pk)
	if code == packets.CodeSuccess {
		return nil
	}
	if reason == "max_per_user" {
		h.maxPerUser.Inc()
	} else {
		h.failures[reason].Inc()
	}
	if h.logs.allow() {
		h.log.Warn("MQTT client refused", "reason", reason, "user", string(pk.Connect.Username),
			"client", cl.ID, "remote", cl.Net.Remote, "answer", code.Reason)
	}
	if err := h.srv.SendConnack(cl, forVersion(cl, code), false, nil); err != nil {
		return fmt.Errorf("refuse %s (%s): %w", cl.ID, code.Reason, err)
	}
	return code
}

// forVersion returns code, or for an MQTT 3 client the code mochi turns
// into the MQTT 3 answer that comes closest (MQTT 3 has no 0x87 or 0x9F).
func forVersion(cl *mqtt.Client, code packets.Code) packets.Code {
	if cl.Properties.ProtocolVersion >= 5 {
		return code
	}
	switch code {
	case packets.ErrNotAuthorized:
		return packets.ErrBadUsernameOrPassword // 0x05 not authorized
	case packets.ErrConnectionRateExceeded, packets.ErrServerBusy, packets.ErrQuotaExceeded:
		return packets.ErrServerUnavailable
	}
	return code
}

// admit returns the answer to a CONNECT and, for a refusal, the reason
// counted in the metric.
func (h *authHook) admit(cl *mqtt.Client, pk packets.Packet) (packets.Code, string) {
	if isReservedClientID(cl.ID) {
		return packets.ErrClientIdentifierNotValid, "client_id"
	}
	name := string(pk.Connect.Username)
	if name == "" {
		if !h.allowAnonymous {
			return packets.ErrBadUsernameOrPassword, "anonymous"
		}
	} else {
		if code, reason := h.authenticate(cl, name, pk.Connect.Password); code != packets.CodeSuccess {
			return code, reason
		}
		if u := h.users[name]; pk.Connect.ClientIdentifier != "" && !u.mayUseClientID(cl.ID) {
			return packets.ErrClientIdentifierNotValid, "client_id"
		}
	}
	if will := cl.Properties.Will; will.Flag == 1 {
		if !h.mayPublish(name, will.TopicName) || will.Retain && !covers(retainTopics, will.TopicName) {
			return packets.ErrNotAuthorized, "will"
		}
		// mochi sends a delayed Will without asking OnWill; sending every
		// Will at once keeps it checked right before it goes out.
		cl.Properties.Will.WillDelayInterval = 0
	}
	// A session (connected or kept) belongs to the user that made it: no
	// other user may take it over nor resume it.
	if old, ok := h.srv.Clients.Get(cl.ID); ok && !bytes.Equal(old.Properties.Username, pk.Connect.Username) {
		return packets.ErrClientIdentifierNotValid, "session"
	}
	if !h.accept(cl, name) {
		return packets.ErrQuotaExceeded, "max_per_user"
	}
	return packets.CodeSuccess, ""
}

// authenticate checks a user's password, within the throttle.
func (h *authHook) authenticate(cl *mqtt.Client, name string, password []byte) (packets.Code, string) {
	ip := remoteIP(cl.Net.Remote)
	hash, isUser := h.hashes[name]
	if h.throttle.blocked(name, isUser, ip) > 0 {
		return packets.ErrConnectionRateExceeded, "throttled"
	}
	if !isUser {
		// Counted against the address, so that a scanner is throttled too.
		h.throttle.failed(name, false, ip)
		return packets.ErrBadUsernameOrPassword, "unknown_user"
	}
	select {
	case h.hashing <- struct{}{}:
	case <-time.After(hashWait):
		return packets.ErrServerBusy, "busy"
	}
	// Attempts that waited for their turn meet the failures counted meanwhile.
	if h.throttle.blocked(name, isUser, ip) > 0 {
		<-h.hashing
		return packets.ErrConnectionRateExceeded, "throttled"
	}
	ok := hash.matches(password)
	<-h.hashing
	if !ok {
		if key, d := h.throttle.failed(name, true, ip); d > 0 && h.logs.allow() {
			h.log.Warn("too many failed MQTT logins: refusing them for a while", "key", key, "for", d)
		}
		return packets.ErrBadUsernameOrPassword, "password"
	}
	h.throttle.succeeded(name, ip)
	return packets.CodeSuccess, ""
}

// accept marks cl for OnConnectAuthenticate, which mochi calls right after
// the OnConnect hooks, if its user (name, empty for anonymous) has fewer
// than its MaxClients connected: the clients mochi holds, but for one cl
// takes over, and those marked and not yet held. A mark left by a client
// that a later OnConnect hook refused is dropped a minute on.
func (h *authHook) accept(cl *mqtt.Client, name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	n := 0
	for c, at := range h.accepted {
		switch {
		case now.Sub(at) > time.Minute:
			delete(h.accepted, c)
		case string(c.Properties.Username) == name && c.ID != cl.ID:
			n++
		}
	}
	if u, ok := h.users[name]; ok {
		for _, c := range h.srv.Clients.GetAll() {
			if !c.Net.Inline && !c.Closed() && c.ID != cl.ID && string(c.Properties.Username) == name {
				n++
			}
		}
		if n >= u.maxClients() {
			return false
		}
	}
	h.accepted[cl] = now
	return true
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.accepted[cl]
	delete(h.accepted, cl)
	return ok
}

// OnPublish refuses a network client's retained message outside
// retainTopics and a topic name over maxTopicLen, as refusePublish tells.
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	switch {
	case len(pk.TopicName) > maxTopicLen:
		h.pubRefused[reasonTopicTooLong].Inc()
		return pk, refusePublish(cl, pk, packets.ErrTopicNameInvalid)
	case pk.FixedHeader.Retain && !covers(retainTopics, pk.TopicName):
		h.pubRefused[reasonRetainedTopic].Inc()
		return pk, refusePublish(cl, pk, packets.ErrNotAuthorized)
	}
	return pk, nil
}

// OnSubscribe refuses the filters past the subscription limits.
func (h *authHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	return h.subs.check(cl, pk)
}

// OnPacketEncode gives the SUBACK of a subscription past the limits its
// reason codes.
func (h *authHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Suback {
		return h.subs.answer(cl, pk)
	}
	return pk
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.subs.forget(cl) }

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return h.allowed(string(cl.Properties.Username), topic, write)
}

// allowed reports whether the user (anonymous if name is empty) may publish
// to (write) or read the topic or filter.
func (h *authHook) allowed(name, topic string, write bool) bool {
	a, ok := h.acls[name]
	if !ok {
		return name == "" && h.allowAnonymous
	}
	allowed := a.read
	if write {
		allowed = a.write
	}
	for _, p := range allowed {
		if covers(p, topic) {
			return true
		}
	}
	return false
}

// mayPublish reports whether the user may publish (or leave a Will) on a
// topic: a topic name, not a filter.
func (h *authHook) mayPublish(name, topic string) bool {
	if topic == "" || len(topic) > maxTopicLen || strings.ContainsAny(topic, "+#\x00") {
		return false
	}
	return h.allowed(name, topic, true)
}

// OnWill checks a Will again as it is sent. It cannot fail once CONNECT
// passed (roles do not change while the broker runs); if it ever does, the
// Will is dropped: mochi publishes whatever OnWill returns, and a Will with
// no topic reaches no subscriber and retains nothing.
func (h *authHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if h.mayPublish(string(cl.Properties.Username), will.TopicName) && (!will.Retain || covers(retainTopics, will.TopicName)) {
		return will, nil
	}
	h.failures["will"].Inc()
	h.log.Error("dropped a Will on a topic its user may not publish", "client", cl.ID, "topic", will.TopicName)
	return mqtt.Will{}, nil
}

// covers reports whether every topic matched by filter (or the topic itself)
// is matched by pattern, both MQTT topic filters.
func covers(pattern, filter string) bool {
	p, f := strings.Split(pattern, "/"), strings.Split(filter, "/")
	for i, pl := range p {
		if pl == "#" {
			return true
		}
		if i >= len(f) {
			return false
		}
		switch fl := f[i]; {
		case fl == "#":
			return false
		case pl == "+":
		case fl == "+" || pl != fl:
			return false
		}
	}
	return len(f) == len(p)
}

// logLimiter lets through a few log lines a minute, so that a client
// retrying a refused CONNECT does not fill the SD card; the metric counts
// every refusal.
type logLimiter struct {
	now   func() time.Time
	mu    sync.Mutex
	start time.Time
	n     int
}

const logsPerMinute = 20

func (l *logLimiter) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.start) >= time.Minute {
		l.start, l.n = now, 0
	}
	l.n++
	return l.n <= logsPerMinute
}
