package broker

import (
	"net"
	"sync"
	"time"
)

// loginThrottle counts failed logins per remote address and per user. Past a
// few failures a key is blocked for a back-off that doubles with each further
// failure; while it lasts every attempt with that key is refused at once,
// without running the password hash, and is not counted (so an attacker
// hammering a blocked key does not lengthen the block for a legitimate
// client). A key is forgotten twice its longest back-off after its last
// failure.
//
// Keeping an attacker from locking out the kiosk:
//   - The address limit is the long one (up to an hour): it stops a guesser
//     on one host whatever the names it tries.
//   - The user limit is short (up to a minute) and comes later: it bounds
//     guessing from many addresses, and an attacker who trips it keeps the
//     user out for at most a minute per guess its own address still gets.
//   - A user that has logged in from an address (a known pair, remembered
//     in a bounded table) is exempt there from both the address's limit and
//     the user's: its attempts and failures there count against a key of the
//     pair alone, with the user limit. So neither a guesser on the kiosk's
//     own host (loopback) nor one rotating addresses elsewhere locks the
//     kiosk out of where it logs in from; a guesser sharing the kiosk's
//     address and guessing its password is bound to one guess a minute.
//   - Only users of the users file get a user key: unknown names cannot
//     fill the table.
//
// The state is in memory: a restart of the gateway forgets it.
type loginThrottle struct {
	now        func() time.Time
	addr, user limit

	mu    sync.Mutex
	keys  map[string]*failures // "a "+address, "u "+user or "p "+user+" "+address
	known map[string]time.Time // user+" "+address that logged in, when
}

// limit is the rule of one kind of key.
type limit struct {
	after     int           // failures that start a block
	base, max time.Duration // the first block, doubling up to max
}

type failures struct {
	n           int
	last, until time.Time
}

// maxThrottleKeys bounds each table of the throttle; past it the entry seen
// longest ago is dropped.
const maxThrottleKeys = 4096

// newLoginThrottle returns a throttle with the limits described above:
// an address is blocked after 5 failures, a user after 10, from 1 s doubling
// up to an hour for an address and a minute for a user.
func newLoginThrottle(now func() time.Time) *loginThrottle {
	return &loginThrottle{now: now,
		addr: limit{after: 5, base: time.Second, max: time.Hour},
		user: limit{after: 10, base: time.Second, max: time.Minute},
		keys: map[string]*failures{}, known: map[string]time.Time{}}
}

// remoteIP returns the address part of a client's remote "host:port".
func remoteIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// keysOf returns the keys an attempt of name (a user of the file or not)
// from ip is checked and counted against.
func (t *loginThrottle) keysOf(name string, isUser bool, ip string) []string {
	if _, ok := t.known[name+" "+ip]; ok && isUser {
		return []string{"p " + name + " " + ip}
	}
	if isUser {
		return []string{"a " + ip, "u " + name}
	}
	return []string{"a " + ip}
}

func (t *loginThrottle) limitOf(key string) limit {
	if key[0] == 'u' || key[0] == 'p' {
		return t.user
	}
	return t.addr
}

// blocked returns how long an attempt must still wait; 0 lets it through.
func (t *loginThrottle) blocked(name string, isUser bool, ip string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var wait time.Duration
	for _, k := range t.keysOf(name, isUser, ip) {
		f := t.keys[k]
		if f == nil {
			continue
		}
		if now.Sub(f.last) > 2*t.limitOf(k).max {
			delete(t.keys, k)
			continue
		}
		wait = max(wait, f.until.Sub(now))
	}
	return wait
}

// failed counts a wrong password. It returns the block it starts, if any,
// and the key blocked, for the log.
func (t *loginThrottle) failed(name string, isUser bool, ip string) (string, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var blockedKey string
	var block time.Duration
	for _, k := range t.keysOf(name, isUser, ip) {
		l := t.limitOf(k)
		f := t.keys[k]
		if f == nil || now.Sub(f.last) > 2*l.max {
			makeRoom(t.keys, func(f *failures) time.Time { return f.last })
			f = new(failures)
			t.keys[k] = f
		}
		f.n++
		f.last = now
		if f.n < l.after {
			continue
		}
		d := l.max
		if shift := f.n - l.after; shift < 32 && l.base<<shift < l.max {
			d = l.base << shift
		}
		f.until = now.Add(d)
		if d > block {
			blockedKey, block = k, d
		}
	}
	return blockedKey, block
}

// succeeded forgets the failures of the pair and remembers that the user
// logs in from ip. The address's and the user's failures stay: a guesser
// holding one account must not wipe the address's by logging in with it
// between guesses, and the kiosk logging in every minute must not wipe the
// user's for guessers elsewhere.
func (t *loginThrottle) succeeded(name, ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, "p "+name+" "+ip)
	k := name + " " + ip
	if _, ok := t.known[k]; !ok {
		makeRoom(t.known, func(at time.Time) time.Time { return at })
	}
	t.known[k] = t.now()
}

// makeRoom drops the oldest entry of m when it is full.
func makeRoom[V any](m map[string]V, at func(V) time.Time) {
	if len(m) < maxThrottleKeys {
		return
	}
	var oldest string
	var when time.Time
	for k, v := range m {
		if a := at(v); oldest == "" || a.Before(when) {
			oldest, when = k, a
		}
	}
	delete(m, oldest)
}
