package bridge_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/gatewaytest"
	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
)

// TestUnknownEntityBothWays: a message below locky/down/+ that the contract
// does not know gets the same ack from a real gateway whether it comes
// through the bridge or straight to the local broker.
func TestUnknownEntityBothWays(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	cfg := gatewaytest.Config(t)
	cfg.LockerID, cfg.CloudURL = "L1", cloud.URL()
	g := gatewaytest.Start(t, cfg)
	u, err := url.Parse(cloud.URL())
	if err != nil {
		t.Fatal(err)
	}
	backend := gatewaytest.Connect(t, u.Host, "lockers/L1/up/acks")
	local := gatewaytest.Connect(t, g.MQTTAddr(), contract.TopicAcks)
	waitLinkUp(t, g.HTTPAddr())

	const payload = `{"msg_id":%q,"op":"upsert","reservation":{"id":"R1","version":1,"door":7}}`
	backend.Publish("lockers/L1/down/reservations/x", fmt.Sprintf(payload, "via-bridge"))
	local.Publish("locky/down/reservations/x", fmt.Sprintf(payload, "local"))

	viaBridge := ackOf(backend, "lockers/L1/up/acks", "via-bridge")
	direct := ackOf(local, contract.TopicAcks, "local")
	if viaBridge.OK || direct.OK || viaBridge.Error == "" || viaBridge.Error != direct.Error {
		t.Errorf("through the bridge %+v, on the local broker %+v; want the same error ack", viaBridge, direct)
	}
}

func ackOf(c *gatewaytest.Client, topic, msgID string) contract.Ack {
	var a contract.Ack
	m := c.Await(topic, func(p []byte) bool { return json.Unmarshal(p, &a) == nil && a.MsgID == msgID })
	_ = json.Unmarshal(m.Payload, &a) // matched above
	return a
}

// waitLinkUp polls the gateway's /metrics until its bridge is subscribed.
func waitLinkUp(t *testing.T, httpAddr string) {
	t.Helper()
	deadline := time.Now().Add(gatewaytest.WaitLimit)
	for {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body) // a short read fails the check below
			resp.Body.Close()
			if strings.Contains(string(b), "\nlocky_bridge_link_up 1\n") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bridge is not up after %s", gatewaytest.WaitLimit)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}
