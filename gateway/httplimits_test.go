package gateway_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestHTTPSlowBodiesAndConnectionsPastTheCap attacks the real gateway as the
// issue did: connections that send a POST's headers and never its body. The
// gateway closes them once the body deadline passes, /healthz answers a
// fresh connection meanwhile, and connections past the cap are closed at
// once, without an answer.
func TestHTTPSlowBodiesAndConnectionsPastTheCap(t *testing.T) {
	g := startGateway(t, testConfig(t))
	addr := g.HTTPAddr()
	const slow, cap = 100, 128                             // cap is the gateway's httpMaxConns
	deadline := time.Now().Add(waitLimit + 15*time.Second) // a hang guard, beyond the 10 s body timeout
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(deadline)
		return c
	}
	// healthz sends GET /healthz on c (read through r) and returns the
	// status, or the read error when the gateway closed c unanswered. With
	// last, it asks the gateway to close c and waits for that.
	healthz := func(c net.Conn, r *bufio.Reader, last bool) (int, error) {
		req := "GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\n"
		if last {
			req += "Connection: close\r\n"
		}
		if _, err := io.WriteString(c, req+"\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if last && err == nil {
			_, err = io.Copy(io.Discard, r) // until the gateway closes c
		}
		return resp.StatusCode, err
	}
	fresh := func() (int, error) {
		c := dial()
		return healthz(c, bufio.NewReader(c), true)
	}

	var held []net.Conn
	for i := range slow {
		c := dial()
		path := "/api/kiosk/code"
		if i%2 == 1 {
			path = "/sim/doors/1/close" // a handler that never reads the body
		}
		if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", path, addr); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if code, err := fresh(); err != nil || code != 200 {
		t.Fatalf("/healthz during the attack: %d, %v; want 200", code, err)
	}

	// Fill the cap, then past it: at most cap connections are served. Each
	// is dialed before any is answered and closed, so the slow ones and
	// these hold the cap together.
	var extra []net.Conn
	for range cap - slow + 20 {
		extra = append(extra, dial())
	}
	refused := 0
	var served []net.Conn
	readers := map[net.Conn]*bufio.Reader{}
	for _, c := range extra { // kept alive when served: they hold their slots
		r := bufio.NewReader(c)
		code, err := healthz(c, r, false)
		switch {
		case err == nil && code == 200:
			served, readers[c] = append(served, c), r
		case err != nil && !isTimeout(err):
			refused++ // closed without an answer
		default:
			t.Fatalf("a connection past the slow ones: %d, %v", code, err)
		}
	}
	for _, c := range served { // the gateway closes them, freeing their slots
		if code, err := healthz(c, readers[c], true); err != nil || code != 200 {
			t.Fatalf("a served connection's last request: %d, %v", code, err)
		}
	}
	if refused < 20 || len(served) > cap-slow {
		t.Errorf("%d connections served, %d closed unanswered; want at most %d served beside the %d slow ones", len(served), refused, cap-slow, slow)
	}
	if got := metricValue(t, g, "locky_http_connections_refused_total"); got < float64(refused) {
		t.Errorf("locky_http_connections_refused_total %v; want %d or more", got, refused)
	}

	// The slow bodies: each connection gets its answer (or none) and is
	// closed once the body deadline passes.
	for i, c := range held {
		_, err := io.Copy(io.Discard, c)
		if isTimeout(err) {
			t.Fatalf("slow connection %d still open at the hang guard", i)
		}
	}
	if code, err := fresh(); err != nil || code != 200 {
		t.Fatalf("/healthz after the attack: %d, %v; want 200", code, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// metricValue reads one sample of /metrics.
func metricValue(t *testing.T, g *testGateway, name string) float64 {
	t.Helper()
	v, ok := readMetrics(t, g)[name]
	if !ok {
		t.Fatalf("no %s in /metrics", name)
	}
	return v
}
