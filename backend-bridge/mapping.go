package bridge

import (
	"fmt"
	"strings"
)

// route is a Mapping with {id} replaced, ready to match topics.
type route struct {
	from, to string // whole topics, or prefixes ending in "/" (or empty) when wild
	wild     bool
	filter   string // From as an MQTT filter, for subscribing
	qos      byte
}

// compile checks mappings and replaces {id} with the locker id.
func compile(ms []Mapping, id, field string) ([]route, error) {
	if len(ms) == 0 {
		return nil, configErr("%s is empty: give at least one mapping, or leave it nil for the default", field)
	}
	out := make([]route, 0, len(ms))
	for i, m := range ms {
		from := strings.ReplaceAll(m.From, "{id}", id)
		to := strings.ReplaceAll(m.To, "{id}", id)
		fw, err := wildPrefix(from)
		if err != nil {
			return nil, configErr("%s[%d].From %q: %w", field, i, m.From, err)
		}
		tw, err := wildPrefix(to)
		if err != nil {
			return nil, configErr("%s[%d].To %q: %w", field, i, m.To, err)
		}
		if fw.wild != tw.wild {
			return nil, configErr("%s[%d]: From %q and To %q must both end in /# or neither", field, i, m.From, m.To)
		}
		if m.QoS > 1 {
			return nil, configErr("%s[%d]: QoS %d is not supported; use 0 or 1", field, i, m.QoS)
		}
		out = append(out, route{from: fw.prefix, to: tw.prefix, wild: fw.wild, filter: from, qos: m.QoS})
	}
	return out, nil
}

type wild struct {
	prefix string
	wild   bool
}

func wildPrefix(s string) (wild, error) {
	if s == "" {
		return wild{}, fmt.Errorf("empty topic")
	}
	if strings.Contains(s, "+") {
		return wild{}, fmt.Errorf("'+' is not supported; use a trailing /#")
	}
	i := strings.Index(s, "#")
	switch {
	case i < 0:
		return wild{prefix: s}, nil
	case i != len(s)-1 || (i > 0 && s[i-1] != '/'):
		return wild{}, fmt.Errorf("'#' may only be the last level")
	}
	return wild{prefix: s[:i], wild: true}, nil
}

// mapTopic maps topic through the first route that matches it.
func mapTopic(routes []route, topic string) (string, byte, bool) {
	for _, r := range routes {
		if !r.wild {
			if topic == r.from {
				return r.to, r.qos, true
			}
			continue
		}
		if rest, ok := strings.CutPrefix(topic, r.from); ok {
			return r.to + rest, r.qos, true
		}
		// "a/#" also matches "a" itself.
		if r.from != "" && topic == strings.TrimSuffix(r.from, "/") {
			return strings.TrimSuffix(r.to, "/"), r.qos, true
		}
	}
	return "", 0, false
}
