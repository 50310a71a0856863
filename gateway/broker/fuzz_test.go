package broker

import (
	"strings"
	"testing"
)

// matches is the MQTT matching of a topic name by a filter, written plainly
// as the reference for covers.
func matches(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, fl := range f {
		switch {
		case fl == "#":
			return true
		case i >= len(t):
			return false
		case fl != "+" && fl != t[i]:
			return false
		}
	}
	return len(f) == len(t)
}

func validFilter(s string) bool {
	if s == "" {
		return false
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && l != "+" && !(l == "#" && i == len(levels)-1) {
			return false
		}
	}
	return true
}

func validTopic(s string) bool { return s != "" && !strings.ContainsAny(s, "+#") }

// FuzzCovers checks the ACL matcher: a pattern covering a filter matches
// every topic the filter matches, and covers every filter equal to it.
func FuzzCovers(f *testing.F) {
	for _, s := range [][3]string{
		{"locky/doors/+/state", "locky/doors/7/state", "locky/doors/7/state"},
		{"locky/#", "locky/up/#", "locky/up/events"},
		{"locky/screen/code", "locky/screen/#", "locky/screen/display"},
		{"locky/up/#", "locky/#", "locky"},
		{"#", "+/x", "a/x"},
		{"a/+", "a/#", "a"},
		{"a//b", "a/+/b", "a//b"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, pattern, filter, topic string) {
		got := covers(pattern, filter)
		if !validFilter(pattern) || !validFilter(filter) {
			return
		}
		if !covers(pattern, pattern) || !covers(filter, filter) {
			t.Fatalf("a filter does not cover itself: %q or %q", pattern, filter)
		}
		if got && validTopic(topic) && matches(filter, topic) && !matches(pattern, topic) {
			t.Fatalf("covers(%q, %q) but %q matches the filter and not the pattern", pattern, filter, topic)
		}
		if validTopic(filter) && got != matches(pattern, filter) {
			t.Fatalf("covers(%q, topic %q) = %v; matching says %v", pattern, filter, got, !got)
		}
	})
}

// FuzzParseUser checks the users-file line parser: it never panics, what it
// accepts is valid and written back the same, and an accepted hash is in
// its one canonical form.
func FuzzParseUser(f *testing.F) {
	hash := "$argon2id$v=19$m=64,t=1,p=1$IStFW3aem0daoDrssWDj7Q$9wnIYTi3etlOb7iHL11wIgNrUqn7THQcqoyboV6xK8w"
	for _, s := range []string{
		"kiosk screen " + hash,
		"board doors " + hash + " board,board-*",
		"d door:12 " + hash + " x/*",
		"kiosk screen 8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92",
		"kiosk screen $argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"a admin $argon2id$v=19$m=08,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"inline screen " + hash,
		"a screen " + hash + " inline,*",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		u, err := ParseUser(line)
		if err != nil {
			return
		}
		if err := u.check(); err != nil {
			t.Fatalf("ParseUser(%q) accepted an invalid user: %v", line, err)
		}
		again, err := ParseUser(u.Line())
		if err != nil || again.Line() != u.Line() {
			t.Fatalf("ParseUser(%q).Line() = %q does not parse back: %v", line, u.Line(), err)
		}
		h, err := parsePasswordHash(u.PasswordHash)
		if err != nil || h.String() != u.PasswordHash {
			t.Fatalf("hash %q accepted but not canonical (%q, %v)", u.PasswordHash, h.String(), err)
		}
		if h.params.check() != nil {
			t.Fatalf("hash %q: costs out of bounds", u.PasswordHash)
		}
		for _, p := range u.ClientIDs {
			if p == reservedClientID || strings.HasPrefix(strings.TrimSuffix(p, "*"), reservedClientIDPrefix) {
				t.Fatalf("user %q was given the gateway's client id %q", line, p)
			}
		}
	})
}
