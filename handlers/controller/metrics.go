package controller

import (
	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/handlers/contract"
)

type workflowMetrics struct {
	attempts      map[string]*metrics.Counter
	codeToCommand *metrics.Histogram
	codeToOpen    *metrics.Histogram
	cycles        *metrics.Counter
	faults        *metrics.Counter
	leftOpen      *metrics.Counter
	forced        *metrics.Counter
	lockouts      *metrics.Counter
}

// newWorkflowMetrics creates every workflow series up front, so that a
// dashboard shows zero rather than no data for what has not happened yet.
func newWorkflowMetrics(s *metrics.Set) *workflowMetrics {
	m := &workflowMetrics{
		attempts:      map[string]*metrics.Counter{},
		codeToCommand: s.GetOrCreateHistogram("locky_workflow_code_to_command_seconds"),
		codeToOpen:    s.GetOrCreateHistogram("locky_workflow_code_to_open_seconds"),
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
