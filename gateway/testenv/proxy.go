package testenv

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards TCP connections from a free 127.0.0.1 port to a target and
// lets a test break the link the ways a 4G link breaks.
type Proxy struct {
	// Port and Addr (127.0.0.1:Port) are where the proxy listens.
	Port int
	Addr string

	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu    sync.Mutex
	mode  proxyMode
	links map[*link]struct{}
}

type proxyMode int

const (
	forwarding proxyMode = iota
	cut                  // live links closed, new ones closed at once
	blackholed           // bytes are read and dropped, nothing is closed
)

// link is one proxied connection. A broken link drops what it reads.
type link struct {
	client, server net.Conn // server is nil for a link born in a blackhole
	broken         atomic.Bool
	once           sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		_ = l.client.Close()
		if l.server != nil {
			_ = l.server.Close()
		}
	})
}

// NewProxy starts a proxy to target (host:port). It is closed by t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen for the proxy: %s", err)
	}
	p := &Proxy{target: target, ln: ln, links: map[*link]struct{}{}}
	p.Port = ln.Addr().(*net.TCPAddr).Port
	p.Addr = "127.0.0.1:" + strconv.Itoa(p.Port)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL returns the proxy's address as mqtt://127.0.0.1:port.
func (p *Proxy) URL() string { return "mqtt://" + p.Addr }

// Cut closes every live connection and closes new ones as soon as they are
// accepted, until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.mode = cut
	links := p.takeLinks()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Blackhole silently drops every byte in both directions, on live and new
// connections, without closing anything: only keep-alives can notice. Restore
// closes the connections it spoiled.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = blackholed
	for l := range p.links {
		l.broken.Store(true)
	}
}

// Restore forwards new connections again and closes those that a blackhole
// spoiled.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.mode = forwarding
	var spoiled []*link
	for l := range p.links {
		if l.broken.Load() {
			spoiled = append(spoiled, l)
			delete(p.links, l)
		}
	}
	p.mu.Unlock()
	for _, l := range spoiled {
		l.close()
	}
}

// takeLinks empties the link set; p.mu must be held.
func (p *Proxy) takeLinks() []*link {
	out := make([]*link, 0, len(p.links))
	for l := range p.links {
		out = append(out, l)
	}
	clear(p.links)
	return out
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	links := p.takeLinks()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		mode := p.mode
		p.mu.Unlock()
		l := &link{client: c}
		switch mode {
		case cut:
			_ = c.Close()
			continue
		case blackholed:
			l.broken.Store(true)
		case forwarding:
			s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			l.server = s
		}
		p.mu.Lock()
		if p.mode != mode { // changed while dialling: start over with the new mode
			p.mu.Unlock()
			l.close()
			continue
		}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.pipe(l, l.client, l.server)
		if l.server != nil {
			p.wg.Add(1)
			go p.pipe(l, l.server, l.client)
		}
	}
}

// pipe copies src to dst until either fails, dropping bytes once the link is
// broken; then it closes the link.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
		l.close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !l.broken.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
