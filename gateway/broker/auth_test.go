package broker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestCovers(t *testing.T) {
	f := func(pattern, filter string, want bool) {
		t.Helper()
		if got := covers(pattern, filter); got != want {
			t.Errorf("covers(%q, %q) = %v; want %v", pattern, filter, got, want)
		}
	}
	f("locky/screen/code", "locky/screen/code", true)
	f("locky/screen/code", "locky/screen/display", false)
	f("locky/screen/code", "locky/screen/#", false)
	f("locky/doors/+/state", "locky/doors/7/state", true)
	f("locky/doors/+/state", "locky/doors/+/state", true)
	f("locky/doors/+/state", "locky/doors/#", false)
	f("locky/doors/7/command", "locky/doors/+/command", false)
	f("locky/doors/7/command", "locky/doors/8/command", false)
	f("locky/#", "locky/up/events", true)
	f("locky/#", "locky", true) // MQTT: a/# matches a itself
	f("locky/#", "other/x", false)
	f("#", "anything/at/all", true)
	f("locky/up/#", "locky/up/#", true)
	f("locky/up/#", "locky/#", false)
}

func TestReadUsersNamesTheBadLine(t *testing.T) {
	f := func(content, want string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "users")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadUsers(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadUsers(%q) error %v; want one containing %q", content, err, want)
		}
	}
	hash := fmt.Sprintf("%x", sha256.Sum256([]byte("pw")))
	f("kiosk screen\n", ":1: want `name role")
	f("# users\nkiosk screen nothex\n", ":2: the password hash")
	f("kiosk pilot "+hash+"\n", `role "pilot" is unknown`)
	f("d door:x "+hash+"\n", "want door:N")
	f("a screen "+hash+"\na observer "+hash+"\n", `user "a" appears twice`)
}

// TestRolesOnARealBroker connects real MQTT clients with each role and checks
// what the broker lets them do.
func TestRolesOnARealBroker(t *testing.T) {
	hash := func(pw string) [32]byte { return sha256.Sum256([]byte(pw)) }
	b, err := New(Config{Addr: "127.0.0.1:0", Users: []User{
		{Name: "kiosk", PasswordSHA256: hash("k"), Role: "screen"},
		{Name: "door7", PasswordSHA256: hash("d"), Role: "door:7"},
		{Name: "ops", PasswordSHA256: hash("o"), Role: "observer"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	if _, err := dial(t, b.Addr(), "", ""); err == nil {
		t.Errorf("anonymous client connected outside dev mode")
	}
	if _, err := dial(t, b.Addr(), "kiosk", "wrong"); err == nil {
		t.Errorf("client with a wrong password connected")
	}
	if _, err := dial(t, b.Addr(), "nobody", "k"); err == nil {
		t.Errorf("unknown user connected")
	}
	f := func(user, pw, topic string, write, want bool) {
		t.Helper()
		c, err := dial(t, b.Addr(), user, pw)
		if err != nil {
			t.Fatalf("%s cannot connect: %v", user, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var got bool
		if write {
			_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("{}")})
			got = err == nil
		} else {
			sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
			got = err == nil && len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80
		}
		if got != want {
			t.Errorf("%s write=%v %s: allowed=%v; want %v", user, write, topic, got, want)
		}
	}
	f("kiosk", "k", "locky/screen/code", true, true)
	f("kiosk", "k", "locky/down/reservations", true, false)
	f("kiosk", "k", "locky/screen/display", false, true)
	f("kiosk", "k", "locky/#", false, false)
	f("door7", "d", "locky/doors/7/state", true, true)
	f("door7", "d", "locky/doors/8/state", true, false)
	f("door7", "d", "locky/doors/7/command", false, true)
	f("door7", "d", "locky/doors/+/command", false, false)
	f("ops", "o", "locky/#", false, true)
	f("ops", "o", "locky/screen/code", true, false)
}

func dial(t *testing.T, addr, user, pw string) (*paho.Client, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: fmt.Sprintf("%s-%d", user, time.Now().UnixNano()), CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pw), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		return nil, err
	}
	if ca.ReasonCode != 0 {
		return nil, errors.New("refused")
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, nil
}
