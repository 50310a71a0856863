package gateway_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
)

// lockedBuffer is a bytes.Buffer the gateway's goroutines may write at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestGatewayLogStaysBoundedUnderAttack makes two components of the real
// gateway log one line per message, as the issue did: code requests with a
// refused MQTT 5 response topic (the controller) and rejected downstream
// messages (the store handler). The log keeps the first lines and sums up the
// rest.
func TestGatewayLogStaysBoundedUnderAttack(t *testing.T) {
	var out lockedBuffer
	g, done := runGateway(t, testConfig(t), slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})))
	c := gatewaytest.Connect(t, g.MQTTAddr(), contract.TopicScreenDisplay, contract.TopicAcks)

	const codes, down = 5000, 1000
	for i := range codes {
		c.PublishWith(&paho.Publish{Topic: contract.TopicScreenCode, QoS: 1,
			Payload:    fmt.Appendf(nil, `{"code":"999999","request_id":"r%d"}`, i),
			Properties: &paho.PublishProperties{ResponseTopic: "locky/up/events/" + strings.Repeat("x", 200)}})
	}
	c.Await(contract.TopicScreenDisplay, func(p []byte) bool { return bytes.Contains(p, fmt.Appendf(nil, `"r%d"`, codes-1)) })
	for i := range down {
		c.Publish(contract.TopicDownPrefix+contract.EntityReservations, fmt.Sprintf(`{"msg_id":"bad-%d","op":"nope"}`, i))
	}
	c.Ack(fmt.Sprintf("bad-%d", down-1))
	if err := g.Close(); err != nil { // writes the summaries
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	log := out.String()
	lines := strings.Count(log, "\n")
	if lines > 100 {
		t.Errorf("%d log lines for %d code requests and %d rejected messages; want at most 100:\n%s", lines, codes, down, log)
	}
	for _, want := range []string{
		"ignored the MQTT 5 response topic of a code request",
		"rejected a downstream message",
		"msg_id=bad-0 ",
		"suppressed similar log lines",
		`message="ignored the MQTT 5 response topic of a code request"`,
		`message="rejected a downstream message"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log has no %q:\n%s", want, log)
		}
	}
}
