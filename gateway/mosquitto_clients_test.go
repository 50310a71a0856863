package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

// subprocess lines: mosquitto_sub -v prints "topic payload" per message.
type lines struct {
	mu  sync.Mutex
	all []string
	ch  chan struct{}
}

func (l *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.mu.Unlock()
		select {
		case l.ch <- struct{}{}:
		default:
		}
	}
}

func (l *lines) await(t *testing.T, prefix, contains string) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		l.mu.Lock()
		for _, s := range l.all {
			if strings.HasPrefix(s, prefix+" ") && strings.Contains(s, contains) {
				l.mu.Unlock()
				return strings.TrimPrefix(s, prefix+" ")
			}
		}
		l.mu.Unlock()
		select {
		case <-l.ch:
		case <-deadline:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("mosquitto_sub saw no %s containing %s; it saw:\n%s", prefix, contains, strings.Join(l.all, "\n"))
		}
	}
}

// TestTheTourWithMosquittoClients runs the README's tour with the real
// mosquitto_pub and mosquitto_sub, as users test the locker.
func TestTheTourWithMosquittoClients(t *testing.T) {
	for _, bin := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (Debian package mosquitto-clients): %v", bin, err)
		}
	}
	g := startGateway(t, testConfig(t))
	host, port, _ := strings.Cut(g.MQTTAddr(), ":")

	sub := exec.Command("mosquitto_sub", "-h", host, "-p", port, "-V", "mqttv311", "-q", "1", "-v", "-t", "locky/#")
	out, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Process.Kill(); _ = sub.Wait() })
	seen := &lines{ch: make(chan struct{}, 1)}
	go seen.read(out)
	// The retained door states prove the subscription is in place.
	seen.await(t, "locky/doors/12/state", `"closed"`)

	pub := func(topic, payload string) {
		t.Helper()
		out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", topic, "-m", payload).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub %s: %v\n%s", topic, err, out)
		}
	}
	pub("locky/down/reservations", `{"msg_id":"m-1","op":"upsert","reservation":{"id":"R12","version":1,"door":7,"status":"arriving","deposit_code":"123456","pickup_code":"654321","courier_code":"777000"}}`)
	if ack := seen.await(t, "locky/up/acks", `"m-1"`); !strings.Contains(ack, `"ok":true`) {
		t.Fatalf("ack %s; want ok", ack)
	}
	pub("locky/screen/code", `{"code":"123456","request_id":"r1"}`)
	seen.await(t, "locky/doors/7/command", `"open"`)
	seen.await(t, "locky/screen/display", `"result":"opened"`)
	g.SimDoor(t, 7, "close")
	var ev contract.Event
	if err := json.Unmarshal([]byte(seen.await(t, "locky/up/events", `"reservation.stored"`)), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Reservation != "R12" || ev.Door != 7 || ev.Status != contract.StatusStored {
		t.Fatalf("event %+v; want R12 stored in door 7", ev)
	}
	pub("locky/screen/code", `{"code":"654321","request_id":"r2"}`)
	seen.await(t, "locky/screen/display", `"request_id":"r2","result":"opened"`)
	g.SimDoor(t, 7, "close")
	seen.await(t, "locky/up/events", `"reservation.delivered"`)
}
