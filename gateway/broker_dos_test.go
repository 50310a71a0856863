package gateway_test

import (
	"strings"
	"testing"
)

// TestGatewayMaxPerUserFromTheFlag: --mqtt-max-per-user reaches the broker;
// door3's third client is refused with CONNACK 0x97 while the kiosk still
// connects.
func TestGatewayMaxPerUserFromTheFlag(t *testing.T) {
	cfg := testConfig(t)
	cfg.Dev = false
	cfg.CodeKey = strings.Repeat("5a", 32)
	cfg.MQTTUsers = writeUsersFile(t)
	cfg.MQTTMaxPerUser = 2
	g := startGateway(t, cfg)
	mqttConnect(t, g, "door3", mqttOpts{})
	mqttConnect(t, g, "door3", mqttOpts{})
	if c, ca := mqttTry(t, g, "door3", mqttOpts{}); c != nil || ca == nil || ca.ReasonCode != 0x97 {
		t.Fatalf("door3's third client: connack %+v; want 0x97 quota exceeded", ca)
	}
	mqttConnect(t, g, "kiosk", mqttOpts{})
	if v := readMetrics(t, g)[`locky_broker_connections_refused_total{reason="max_per_user"}`]; v != 1 {
		t.Errorf("max_per_user refusals %v; want 1", v)
	}
}
