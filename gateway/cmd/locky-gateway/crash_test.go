package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// buildGateway compiles this program once for the test.
func buildGateway(t *testing.T) string {
	t.Helper()
	return gatewaytest.Build(t, "", "")
}

// startProcess runs the gateway on free ports and waits for its ready log
// line; the test fails if the process reported a data race (StartProcess).
func startProcess(t *testing.T, bin, dataDir string, extra ...string) *gatewaytest.Process {
	t.Helper()
	args := append([]string{"--data-dir", dataDir, "--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--log-format", "json"}, extra...)
	return gatewaytest.StartProcess(t, exec.Command(bin, args...))
}

// driver runs door cycles against a gateway through MQTT and the simulator's
// HTTP controls, failing fast (not the test) when the gateway dies under it.
type driver struct {
	c        *paho.Client
	http     string
	mu       sync.Mutex
	acks     map[string]bool
	displays map[string]string
	statuses map[string]string // reservation → status of its last event
	notify   chan struct{}
	exited   <-chan struct{}
}

func connectDriver(p *gatewaytest.Process) (*driver, error) {
	conn, err := net.Dial("tcp", p.MQTT)
	if err != nil {
		return nil, err
	}
	d := &driver{http: p.HTTP, acks: map[string]bool{}, displays: map[string]string{}, statuses: map[string]string{},
		notify: make(chan struct{}, 1), exited: p.Exited()}
	d.c = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			d.mu.Lock()
			switch pr.Packet.Topic {
			case contract.TopicAcks:
				var a contract.Ack
				if json.Unmarshal(pr.Packet.Payload, &a) == nil {
					d.acks[a.MsgID] = a.OK
				}
			case contract.TopicEvents:
				var e contract.Event
				if json.Unmarshal(pr.Packet.Payload, &e) == nil {
					d.statuses[e.Reservation] = e.Status
				}
			case contract.TopicScreenDisplay:
				var v contract.Display
				if json.Unmarshal(pr.Packet.Payload, &v) == nil {
					d.displays[v.RequestID] = v.Result
				}
			}
			d.mu.Unlock()
			select {
			case d.notify <- struct{}{}:
			default:
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.c.Connect(ctx, &paho.Connect{ClientID: "crash-driver", CleanStart: true, KeepAlive: 30}); err != nil {
		return nil, err
	}
	_, err = d.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: contract.TopicAcks, QoS: 1}, {Topic: contract.TopicScreenDisplay, QoS: 1}, {Topic: contract.TopicEvents, QoS: 1}}})
	return d, err
}

func (d *driver) publish(topic string, v any) error {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := d.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: b})
	return err
}

// wait waits until cond holds, the gateway dies, or 15 s pass.
func (d *driver) wait(cond func() bool) error {
	deadline := time.After(15 * time.Second)
	for {
		d.mu.Lock()
		ok := cond()
		d.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-d.notify:
		case <-d.exited:
			return fmt.Errorf("gateway died")
		case <-deadline:
			return fmt.Errorf("no answer")
		}
	}
}

func (d *driver) closeDoor(door int) error {
	resp, err := http.Post(fmt.Sprintf("http://%s/sim/doors/%d/close", d.http, door), "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// step advances reservation i by one door cycle from its status and returns
// the new status. A door still held by an earlier reservation leaves it as is.
func (d *driver) step(i int, status string, round int) (string, error) {
	id, door := fmt.Sprintf("R%d", i), i%12+1
	deposit, pickup := fmt.Sprintf("%06d", 100000+i), fmt.Sprintf("%06d", 500000+i)
	code, next := "", ""
	switch status {
	case "":
		msgID := fmt.Sprintf("m-%d-%d", i, round)
		err := d.publish(contract.TopicDownPrefix+contract.EntityReservations, contract.DownMessage{MsgID: msgID, Op: contract.OpUpsert,
			Reservation: &contract.Reservation{ID: id, Version: 1, Door: door, DepositCode: deposit, PickupCode: pickup,
				CourierCode: fmt.Sprintf("%06d", 900000+i)}})
		if err != nil {
			return status, err
		}
		var ok bool
		err = d.wait(func() bool { var seen bool; ok, seen = d.acks[msgID]; return seen })
		if err != nil {
			return status, fmt.Errorf("%s: ack of %s: %w", id, msgID, err)
		}
		if !ok {
			return status, nil // its door still holds an earlier parcel
		}
		return contract.StatusArriving, nil
	case contract.StatusArriving:
		code, next = deposit, contract.StatusStored
	case contract.StatusStored:
		code, next = pickup, contract.StatusDelivered
	default:
		return status, nil
	}
	req := fmt.Sprintf("q-%d-%s-%d", i, status, round) // one per code and round
	if err := d.publish(contract.TopicScreenCode, contract.CodeRequest{Code: code, RequestID: req}); err != nil {
		return status, err
	}
	if err := d.wait(func() bool { return d.displays[req] != "" }); err != nil {
		return status, fmt.Errorf("%s: display for %s: %w", id, req, err)
	}
	d.mu.Lock()
	opened := d.displays[req] == contract.ResultOpened
	d.mu.Unlock()
	if !opened {
		return status, fmt.Errorf("%s: code answered %s", id, d.displays[req])
	}
	if err := d.closeDoor(door); err != nil {
		return status, err
	}
	// The event says stored/delivered, or reopened with that status when a
	// restart already completed the cycle the last kill interrupted (the
	// driver read the database before the new gateway closed it).
	if err := d.wait(func() bool { return d.statuses[id] == next }); err != nil {
		return status, fmt.Errorf("%s: no event with status %s after closing door %d: %w", id, next, door, err)
	}
	return next, nil
}

// checkInvariants checks the database a killed gateway (or a power cut) left:
// first the file as it was left (store.CheckFile), then, through the store,
// that every status change has its event and every event its change; and the
// file again once the store closed.
func checkInvariants(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	path := filepath.Join(dataDir, "locky.db")
	if err := store.CheckFile(path); err != nil {
		t.Errorf("database check of what the gateway left: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, "code.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Path: path, CodeKey: key})
	if err != nil {
		t.Fatalf("database damaged after the crash: %v", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
		if err := store.CheckFile(path); err != nil {
			t.Errorf("database check after the store closed: %v", err)
		}
	}()
	rs, err := st.Reservations()
	if err != nil {
		t.Fatalf("reservations unreadable after the crash: %v", err)
	}
	msgs, err := st.OutboxAfter(0, 1<<30)
	if err != nil {
		t.Fatalf("outbox unreadable after the crash: %v", err)
	}
	events := map[string]map[string]bool{}
	for _, m := range msgs {
		if m.Topic != contract.TopicEvents {
			continue
		}
		var e contract.Event
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			t.Fatalf("corrupt event %s: %v", m.Payload, err)
		}
		if events[e.Reservation] == nil {
			events[e.Reservation] = map[string]bool{}
		}
		events[e.Reservation][e.Type] = true
	}
	status := map[string]string{}
	for _, r := range rs {
		status[r.ID] = r.Status
		ev := events[r.ID]
		wantStored := r.Status == contract.StatusStored || r.Status == contract.StatusDelivered
		if ev[contract.EventStored] != wantStored {
			t.Errorf("%s is %s but its stored event present=%v", r.ID, r.Status, ev[contract.EventStored])
		}
		if ev[contract.EventDelivered] != (r.Status == contract.StatusDelivered) {
			t.Errorf("%s is %s but its delivered event present=%v", r.ID, r.Status, ev[contract.EventDelivered])
		}
		var i int
		fmt.Sscanf(r.ID, "R%d", &i)
		got, kind, err := st.LookupCode(fmt.Sprintf("%06d", 500000+i))
		if err != nil || got == nil || got.ID != r.ID || kind != contract.KindPickup {
			t.Errorf("%s: pickup code lookup gives %v %q %v", r.ID, got, kind, err)
		}
	}
	for id := range events {
		if id != "" && status[id] == "" {
			t.Errorf("events for %s, which does not exist", id)
		}
	}
	return status
}

func TestSIGKILLLosesNoCommittedChangeAndNoEvent(t *testing.T) {
	bin := buildGateway(t)
	dataDir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const reservations, kills = 72, 20
	status := map[string]string{}
	for round := 0; round <= kills; round++ {
		p := startProcess(t, bin, dataDir)
		d, err := connectDriver(p)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		if round < kills {
			// SIGKILL at a random point of the stream of door cycles.
			delay := time.Duration(rng.IntN(300)) * time.Millisecond
			time.AfterFunc(delay, func() { _ = p.Signal(syscall.SIGKILL) })
		}
		steps := 0
	stream:
		for !allDelivered(status, reservations) {
			for i := 0; i < reservations; i++ {
				id := fmt.Sprintf("R%d", i)
				before := status[id]
				if status[id], err = d.step(i, before, round); err != nil {
					break stream
				}
				if status[id] != before {
					steps++
				}
			}
		}
		t.Logf("round %d: %d steps, then %v", round, steps, err)
		if round == kills {
			_ = p.Signal(syscall.SIGTERM)
		}
		<-p.Exited()
		status = checkInvariants(t, dataDir)
		if t.Failed() {
			t.Fatalf("invariants broken after round %d", round)
		}
		if round == kills && err != nil {
			t.Fatalf("the last round, without a kill, failed: %v\nthe gateway logged:\n%s\nthe database has:\n%s",
				err, p.Problems(), history(t, dataDir))
		}
	}
	if !allDelivered(status, reservations) {
		t.Fatalf("not every parcel was delivered: %v", status)
	}
}

// history lists the reservations and the events of the outbox, for a
// failure message.
func history(t *testing.T, dataDir string) string {
	raw, _ := os.ReadFile(filepath.Join(dataDir, "code.key"))
	key, _ := hex.DecodeString(strings.TrimSpace(string(raw)))
	st, err := store.Open(store.Config{Path: filepath.Join(dataDir, "locky.db"), CodeKey: key})
	if err != nil {
		return err.Error()
	}
	defer st.Close()
	var b strings.Builder
	rs, _ := st.Reservations()
	for _, r := range rs {
		fmt.Fprintf(&b, "%s %s door %d\n", r.ID, r.Status, r.Door)
	}
	cycles, _ := st.Cycles()
	fmt.Fprintf(&b, "open cycles: %+v\n", cycles)
	msgs, _ := st.OutboxAfter(0, 1<<30)
	for _, m := range msgs {
		if m.Topic == contract.TopicEvents {
			fmt.Fprintf(&b, "%s\n", m.Payload)
		}
	}
	return b.String()
}

func allDelivered(status map[string]string, n int) bool {
	for i := 0; i < n; i++ {
		if status[fmt.Sprintf("R%d", i)] != contract.StatusDelivered {
			return false
		}
	}
	return true
}

// openForDeposit creates reservation R0 on the gateway and enters its
// deposit code: its door is open for the courier when it returns.
func openForDeposit(t *testing.T, p *gatewaytest.Process) {
	t.Helper()
	d, err := connectDriver(p)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := d.step(0, "", 0); err != nil || s != contract.StatusArriving {
		t.Fatalf("create: %q %v", s, err)
	}
	if err := d.publish(contract.TopicScreenCode, contract.CodeRequest{Code: "100000", RequestID: "up"}); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(func() bool { return d.displays["up"] == contract.ResultOpened }); err != nil {
		t.Fatalf("door did not open: %v", err)
	}
}

// TestUpgradeMidCycle stops a gateway with SIGTERM while a door is open for a
// delivery, as an upgrade does, and starts a new binary on the same data dir:
// the old one exits cleanly (exit 0) and the new one completes the delivery.
func TestUpgradeMidCycle(t *testing.T) {
	bin := buildGateway(t)
	dataDir := t.TempDir()
	p := startProcess(t, bin, dataDir)
	openForDeposit(t, p)
	stopped := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select { // a hang guard; how fast it stops is locky-bench's to report
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not exit after SIGTERM")
	}
	if code := p.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; want 0", code)
	}
	t.Logf("SIGTERM → exit in %s", time.Since(stopped))

	p2 := startProcess(t, bin, dataDir) // the new version
	d2, err := connectDriver(p2)
	if err != nil {
		t.Fatal(err)
	}
	// The restarted door bank reports door 1 closed: the courier shut it
	// meanwhile, and the new gateway records the delivery.
	if s, err := d2.step(0, contract.StatusStored, 1); err != nil || s != contract.StatusDelivered {
		t.Fatalf("pickup after the upgrade: %q %v; want delivered (the deposit must have completed)", s, err)
	}
	p2.Kill()
	if st := checkInvariants(t, dataDir); st["R0"] != contract.StatusDelivered {
		t.Fatalf("R0 is %q; want delivered", st["R0"])
	}
}
