package broker

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// User is a client allowed on the local broker.
type User struct {
	Name string
	// PasswordSHA256 is the SHA-256 of the password.
	PasswordSHA256 [32]byte
	// Role decides the topics the user may use (SPEC §6):
	//   screen     publish locky/screen/code, read locky/screen/display
	//   door:N     read locky/doors/N/command, publish locky/doors/N/state
	//   doors      the same for every door (a board driving many doors)
	//   backend    publish locky/down/#, read locky/up/# (an external bridge)
	//   observer   read locky/#
	//   admin      everything
	Role string
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
		return acl{read: []string{"locky/#"}}, nil
	case role == "admin":
		return acl{write: []string{"#"}, read: []string{"#"}}, nil
	}
	return acl{}, fmt.Errorf("role %q is unknown; use screen, door:N, doors, backend, observer or admin", role)
}

// ReadUsers reads a users file: one `name role sha256-hex-of-password` per
// line, # for comments. Make the hash with: printf %s 'password' | sha256sum
func ReadUsers(path string) ([]User, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the MQTT users file: %w", err)
	}
	defer f.Close()
	var out []User
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: want `name role sha256-of-password`", path, n)
		}
		h, err := hex.DecodeString(fields[2])
		if err != nil || len(h) != 32 {
			return nil, fmt.Errorf("%s:%d: the password hash must be 64 hex digits (printf %%s 'password' | sha256sum)", path, n)
		}
		if _, err := roleACL(fields[1]); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if seen[fields[0]] {
			return nil, fmt.Errorf("%s:%d: user %q appears twice", path, n, fields[0])
		}
		seen[fields[0]] = true
		u := User{Name: fields[0], Role: fields[1]}
		copy(u.PasswordSHA256[:], h)
		out = append(out, u)
	}
	return out, sc.Err()
}

// authHook authenticates users and enforces their role's topics. Anonymous
// clients get everything only when allowAnonymous (dev mode).
type authHook struct {
	mqtt.HookBase
	users          map[string]User
	acls           map[string]acl
	allowAnonymous bool
}

func newAuthHook(users []User, allowAnonymous bool) (*authHook, error) {
	h := &authHook{users: map[string]User{}, acls: map[string]acl{}, allowAnonymous: allowAnonymous}
	for _, u := range users {
		a, err := roleACL(u.Role)
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", u.Name, err)
		}
		h.users[u.Name], h.acls[u.Name] = u, a
	}
	return h, nil
}

func (h *authHook) ID() string { return "locky-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	if name == "" {
		return h.allowAnonymous
	}
	u, ok := h.users[name]
	sum := sha256.Sum256(pk.Connect.Password)
	if !ok {
		u.PasswordSHA256 = [32]byte{} // compare anyway: same time for unknown users
	}
	return subtle.ConstantTimeCompare(sum[:], u.PasswordSHA256[:]) == 1 && ok
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	name := string(cl.Properties.Username)
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
