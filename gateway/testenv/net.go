package testenv

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot find a free port: %s", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatalf("cannot release port %d: %s", port, err)
	}
	return port
}

// WaitListening polls a TCP connect to addr until it succeeds or timeout
// passes; alive, when not nil, is asked between attempts and stops the wait
// with its error (a process that exited will never listen).
func WaitListening(addr string, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if alive != nil {
			if aerr := alive(); aerr != nil {
				return aerr
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %s: %w", addr, timeout, err)
		}
		time.Sleep(delay) // polling interval, not a wait for an event
		delay = min(2*delay, 50*time.Millisecond)
	}
}
