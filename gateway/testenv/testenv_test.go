package testenv

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer echoes lines until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

func TestProxy(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); got != "hello" || err != nil {
		t.Fatalf("through the proxy: got %q, %v; want hello", got, err)
	}

	p.Cut()
	if _, err := roundTrip(c, "lost"); err == nil {
		t.Fatal("a live connection still works after Cut")
	}
	c2, err := net.Dial("tcp", p.Addr)
	if err == nil {
		if _, err := roundTrip(c2, "refused"); err == nil {
			t.Fatal("a new connection works after Cut")
		}
		_ = c2.Close()
	}

	p.Restore()
	c3, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, "back"); got != "back" || err != nil {
		t.Fatalf("after Restore: got %q, %v; want back", got, err)
	}

	p.Blackhole()
	if err := c3.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c3, "void\n")
	var ne net.Error
	if _, err := c3.Read(make([]byte, 8)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read through a blackhole: %v; want a timeout (nothing comes back, nothing is closed)", err)
	}
	p.Restore()
	if _, err := roundTrip(c3, "spoiled"); err == nil {
		t.Fatal("a blackholed connection still works after Restore; it should be closed")
	}
}

func TestMosquittoRestart(t *testing.T) {
	m := StartMosquitto(t, WithConfig("max_inflight_messages 50"))
	m.Restart()
	if err := WaitListening(m.Addr, time.Second, nil); err != nil {
		t.Fatalf("after Restart: %s", err)
	}
	m.Stop()
	if err := WaitListening(m.Addr, 0, nil); err == nil {
		t.Fatal("something still listens after Stop")
	}
	m.Start()
}
