package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

// ParseMetrics reads a Prometheus text exposition (what /metrics answers)
// into a map from series, name and labels as written, to value. A line that
// is neither a comment nor "series value" is an error.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the metrics: %w", err)
	}
	return out, nil
}

// SetMetrics returns the series of s, as ParseMetrics reads them.
func SetMetrics(t testing.TB, s *metrics.Set) map[string]float64 {
	t.Helper()
	var buf bytes.Buffer
	s.WritePrometheus(&buf)
	m, err := ParseMetrics(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
