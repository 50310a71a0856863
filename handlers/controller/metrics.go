package controller

import (
	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
)

type workflowMetrics struct {
	attempts      map[string]*metrics.Counter
	codeToCommand *metrics.PrometheusHistogram
	codeToOpen    *metrics.PrometheusHistogram
	cycles        *metrics.Counter
	faults        *metrics.Counter
	leftOpen      *metrics.Counter
	forced        *metrics.Counter
	lockouts      *metrics.Counter
}

// The buckets of the latency histograms, in seconds. A code becomes a door
// command within milliseconds (the target is a p99 under 5 ms); the door's
// open report adds the lock's own time, bounded by the door timeout (5 s).
var (
	codeToCommandBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
	codeToOpenBuckets    = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

// newWorkflowMetrics creates every workflow series up front, so that a
// dashboard shows zero rather than no data for what has not happened yet:
// the histograms have fixed buckets, each written from the start.
func newWorkflowMetrics(s *metrics.Set) *workflowMetrics {
	m := &workflowMetrics{
		attempts:      map[string]*metrics.Counter{},
		codeToCommand: s.GetOrCreatePrometheusHistogramExt("locky_workflow_code_to_command_seconds", codeToCommandBuckets),
		codeToOpen:    s.GetOrCreatePrometheusHistogramExt("locky_workflow_code_to_open_seconds", codeToOpenBuckets),
		cycles:        s.GetOrCreateCounter("locky_workflow_door_cycles_total"),
		faults:        s.GetOrCreateCounter("locky_workflow_door_faults_total"),
		leftOpen:      s.GetOrCreateCounter("locky_workflow_door_left_open_total"),
		forced:        s.GetOrCreateCounter("locky_workflow_door_forced_open_total"),
		lockouts:      s.GetOrCreateCounter("locky_workflow_lockouts_total"),
	}
	for _, r := range []string{contract.ResultOpened, contract.ResultInvalidCode, contract.ResultExpired,
		contract.ResultLockedOut, contract.ResultDoorFault, contract.ResultBusy, contract.ResultBadRequest} {
		m.attempts[r] = s.GetOrCreateCounter(`locky_workflow_code_attempts_total{result="` + r + `"}`)
	}
	return m
}

func (m *workflowMetrics) attempt(result string) {
	if c := m.attempts[result]; c != nil {
		c.Inc()
	}
}
