package bridge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway/testenv"
)

// passwordFile writes a mosquitto password file for user/password pairs.
func passwordFile(t *testing.T, pairs ...string) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Fatalf("mosquitto_passwd is not installed (apt-get install -y mosquitto): %s", err)
	}
	path := filepath.Join(t.TempDir(), "passwd")
	for i := 0; i < len(pairs); i += 2 {
		args := []string{"-b", path, pairs[i], pairs[i+1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %s: %s", err, out)
		}
	}
	return path
}

// TestIsolation runs the example cloud broker's ACL: locker A can neither
// read nor write lockers/B/#, the back-end reaches both, and a bridge with
// the default mappings works within it.
func TestIsolation(t *testing.T) {
	pw := passwordFile(t, "backend", "backend-pw", "A", "a-pw", "B", "b-pw")
	cloud := testenv.StartMosquitto(t, testenv.WithPasswordFile(pw), testenv.WithACLFile("../docker/cloud-mosquitto/acl"))
	backend := newCloudClient(t, cloud.URL(), "backend", "backend", "backend-pw", "lockers/#")
	lockerA := newCloudClient(t, cloud.URL(), "A", "A", "a-pw", "lockers/#")

	// A writes into B's subtree, then into its own: the back-end gets the
	// second one only, so the first was refused (one connection keeps order).
	lockerA.publishMaybeRefused(t, "lockers/B/up/events", `{"forged":true}`)
	lockerA.publish(t, "lockers/A/up/events", `{"marker":1}`)
	if p := backend.expectPayload(t, "lockers/A/up/events", `"marker":1`); p == nil {
		t.Fatal("no marker")
	}
	assertNotReceived(t, backend, "lockers/B/")

	// A subscribes to B's subtree too (Mosquitto grants or refuses it by
	// version); then the back-end writes to B, then to A: A gets only its own.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sa, err := lockerA.client().Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "lockers/B/#", QoS: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("subscribe lockers/B/# as A: reason codes %v", sa.Reasons)
	backend.publish(t, "lockers/B/down/reservations", `{"secret":true}`)
	backend.publish(t, "lockers/A/down/reservations", `{"marker":2}`)
	lockerA.expectPayload(t, "lockers/A/down/reservations", `"marker":2`)
	assertNotReceived(t, lockerA, "lockers/B/")

	// A bridge with the default mappings lives inside its subtree.
	s := newStore(t)
	loc := newLocal(t)
	b := startBridge(t, Config{LockerID: "B", URL: cloud.URL(), Username: "B", Password: "b-pw", Outbox: s, Local: loc})
	waitUntil(t, "link up", b.LinkUp)
	appendEvents(t, s, 10)
	backend.expectEvents(t, eventTopic("B"), 1, 10)
	backend.publish(t, "lockers/B/down/doors", `{"msg_id":"d-1"}`)
	loc.expect(t, `locky/down/doors {"msg_id":"d-1"}`)
}

// TestALockersCredentialsCannotCommandIt: credentials taken from a locker
// (its SD card holds them) publish on the locker's own down/ topics, as the
// back-end does to create a reservation or open a door: the cloud broker
// refuses them, so they never reach the locker.
func TestALockersCredentialsCannotCommandIt(t *testing.T) {
	pw := passwordFile(t, "backend", "backend-pw", "A", "a-pw")
	cloud := testenv.StartMosquitto(t, testenv.WithPasswordFile(pw), testenv.WithACLFile("../docker/cloud-mosquitto/acl"))
	watcher := newCloudClient(t, cloud.URL(), "watcher", "backend", "backend-pw", "lockers/#")
	thief := newCloudClient(t, cloud.URL(), "thief", "A", "a-pw", "lockers/A/down/#")
	for _, topic := range []string{"lockers/A/down/reservations", "lockers/A/down/commands", "lockers/A/down/doors"} {
		thief.publishMaybeRefused(t, topic, `{"msg_id":"forged","command":"open_door","door":7}`)
	}
	thief.publish(t, "lockers/A/up/events", `{"marker":1}`)
	if p := watcher.expectPayload(t, "lockers/A/up/events", `"marker":1`); p == nil {
		t.Fatal("no marker")
	}
	assertNotReceived(t, watcher, "lockers/A/down/")
	assertNotReceived(t, thief, "lockers/A/down/")
	// What the back-end sends still reaches the locker.
	watcher.publish(t, "lockers/A/down/doors", `{"msg_id":"d-1"}`)
	thief.expectPayload(t, "lockers/A/down/doors", `"d-1"`)
}

// publishMaybeRefused publishes and ignores a refusal (Mosquitto answers a
// publish that the ACL denies with success or "not authorized" by version).
func (c *cloudClient) publishMaybeRefused(t *testing.T, topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.client().Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}); err != nil {
		t.Logf("publish %s refused: %s", topic, err)
	}
}

// assertNotReceived checks that nothing under prefix is among what c
// received so far (callers first wait for a later marker on one connection).
func assertNotReceived(t *testing.T, c *cloudClient, prefix string) {
	t.Helper()
	for {
		select {
		case p := <-c.got:
			if strings.HasPrefix(p.Topic, prefix) {
				t.Errorf("received %s %s; the ACL should have kept it out", p.Topic, p.Payload)
			}
		default:
			return
		}
	}
}

// TestWrongCredentials: the bridge keeps retrying, the link stays down and
// connect errors are counted.
func TestWrongCredentials(t *testing.T) {
	pw := passwordFile(t, "L1", "right")
	cloud := testenv.StartMosquitto(t, testenv.WithPasswordFile(pw))
	set := metrics.NewSet()
	b := startBridge(t, Config{URL: cloud.URL(), Username: "L1", Password: "wrong", Outbox: newStore(t), Local: newLocal(t), Metrics: set})
	waitUntil(t, "3 connect errors", func() bool { return metricValue(t, set, `locky_bridge_connects_total{result="failed"}`) >= 3 })
	if b.LinkUp() {
		t.Error("link up with a wrong password")
	}
	if got := metricValue(t, set, "locky_bridge_link_up"); got != 0 {
		t.Errorf("locky_bridge_link_up %v; want 0", got)
	}
	if got := metricValue(t, set, `locky_bridge_connects_total{result="ok"}`); got != 0 {
		t.Errorf("locky_bridge_connects_total %v; want 0", got)
	}
}

// TestNewRefusesBadConfig: New names the file or field to fix.
func TestNewRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	certA, keyA := writeCert(t, dir, "a")
	_, keyB := writeCert(t, dir, "b")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	f := func(mod func(*Config), want string) {
		t.Helper()
		cfg := Config{LockerID: "L1", URL: "mqtts://cloud.example:8883", Outbox: newStore(t), Local: newLocal(t)}
		mod(&cfg)
		_, err := New(cfg)
		if err == nil {
			t.Fatalf("New accepted %+v; want an error naming %q", cfg, want)
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("New: got %q; want ErrConfig naming %q", err, want)
		}
	}
	f(func(c *Config) { c.CAFile = missing }, "CAFile: cannot read \""+missing)
	f(func(c *Config) { c.CAFile = notPEM }, notPEM)
	f(func(c *Config) { c.CertFile, c.KeyFile = certA, keyB }, "are not a matching")
	f(func(c *Config) { c.CertFile, c.KeyFile = missing, keyA }, "CertFile: cannot read")
	f(func(c *Config) { c.CertFile, c.KeyFile = certA, missing }, "KeyFile: cannot read")
	f(func(c *Config) { c.CertFile = certA }, "give both or neither")
	f(func(c *Config) { c.URL, c.CAFile = "mqtt://cloud.example", certA }, "not mqtts://")
	f(func(c *Config) { c.URL = "http://cloud.example" }, "scheme must be mqtt:// or mqtts://")
	f(func(c *Config) { c.URL = "mqtt://" }, "no host")
	f(func(c *Config) { c.URL = "" }, "scheme must be")
	f(func(c *Config) { c.LockerID = "a/b" }, "LockerID")
	f(func(c *Config) { c.Outbox = nil }, "Outbox")
	f(func(c *Config) { c.Local = nil }, "Local")
	f(func(c *Config) { c.Up = []Mapping{{From: "locky/up/#", To: "lockers/{id}/up"}} }, "both end in /#")
	f(func(c *Config) { c.Down = []Mapping{{From: "lockers/+/down", To: "locky/down"}} }, "'+' is not supported")
	f(func(c *Config) { c.Down = []Mapping{{From: "a/#/b", To: "c"}} }, "'#' may only be the last level")
	f(func(c *Config) { c.Up = []Mapping{{From: "a", To: "b", QoS: 2}} }, "QoS 2")
	f(func(c *Config) { c.LocalRetryMin, c.LocalRetryMax = time.Second, time.Millisecond }, "LocalRetryMax must not be below")

	// A matching pair and a CA load.
	cfg := Config{LockerID: "L1", URL: "mqtts://cloud.example", CAFile: certA, CertFile: certA, KeyFile: keyA,
		Outbox: newStore(t), Local: newLocal(t)}
	if _, err := New(cfg); err != nil {
		t.Errorf("New with valid TLS files: %s", err)
	}
}

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir, name string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
