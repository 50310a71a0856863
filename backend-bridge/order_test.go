package bridge

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/locky-edge/locky/gateway/testenv"
)

// packetLog records the types of the MQTT packets a client sends through it
// to the broker at upstream, in order.
type packetLog struct {
	mu    sync.Mutex
	types []byte
}

func (l *packetLog) add(t byte) {
	l.mu.Lock()
	l.types = append(l.types, t)
	l.mu.Unlock()
}

func (l *packetLog) snapshot() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.types...)
}

// recordingProxy forwards one connection at a time to upstream and logs the
// packet types the client sends.
func recordingProxy(t *testing.T, upstream string) (string, *packetLog) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	log := &packetLog{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(c, u); c.Close() }()
			go func() {
				defer u.Close()
				r := bufio.NewReader(io.TeeReader(c, u))
				for {
					h, err := r.ReadByte()
					if err != nil {
						return
					}
					n, mult := 0, 1 // the remaining length, a variable byte integer
					for {
						b, err := r.ReadByte()
						if err != nil {
							return
						}
						n += int(b&0x7f) * mult
						if b&0x80 == 0 {
							break
						}
						mult *= 128
					}
					if _, err := r.Discard(n); err != nil {
						return
					}
					log.add(h >> 4)
				}
			}()
		}
	}()
	return ln.Addr().String(), log
}

// TestSubscribedBeforeOnline: a back-end that waits for the locker's online
// status and then sends must find the locker subscribed, also on the first
// connection of a new session: the bridge subscribes before it publishes
// its status.
func TestSubscribedBeforeOnline(t *testing.T) {
	cloud := testenv.StartMosquitto(t)
	addr, log := recordingProxy(t, cloud.Addr)
	watcher := newCloudClient(t, cloud.URL(), "watcher", "", "", "lockers/+/status")
	b := startBridge(t, Config{URL: "mqtt://" + addr, Outbox: openStore(t, filepath.Join(t.TempDir(), "db")), Local: newLocal(t)})
	waitUntil(t, "link up", b.LinkUp)
	watcher.expectPayload(t, "lockers/"+b.cfg.LockerID+"/status", `"online"`)
	const connect, publish, subscribe = 1, 3, 8
	types := log.snapshot()
	first := func(typ byte) int {
		for i, x := range types {
			if x == typ {
				return i
			}
		}
		return -1
	}
	if s, p := first(subscribe), first(publish); types[0] != connect || s < 0 || p < 0 || s > p {
		t.Fatalf("packet types sent %v: want CONNECT, then SUBSCRIBE before the first PUBLISH (the online status)", types)
	}
}
