package simdoors

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/locky-edge/locky/handlers/contract"
)

type reports struct {
	mu  sync.Mutex
	got []string
}

func (r *reports) add(door int, st contract.DoorState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%d:%s", door, st.State))
}

func (r *reports) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func TestBank(t *testing.T) {
	b, err := New(Config{Doors: 3})
	if err != nil {
		t.Fatal(err)
	}
	r := &reports{}
	b.Watch(r.add)
	f := func(op func() error, want ...string) {
		t.Helper()
		before := len(r.all())
		if err := op(); err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		got := r.all()[before:]
		if len(got) != len(want) {
			t.Fatalf("reports %q; want %q", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("reports %q; want %q", got, want)
			}
		}
	}
	if got := r.all(); len(got) != 3 || got[0] != "1:closed" {
		t.Fatalf("Watch reported %q; want every door closed", got)
	}
	f(func() error { return b.Open(2) }, "2:open")
	f(func() error { return b.Close(2) }, "2:closed")
	f(func() error { return b.Jam(3, true) })
	f(func() error { return b.Open(3) }) // jammed: nothing happens
	f(func() error { return b.Jam(3, false) })
	f(func() error { return b.Open(3) }, "3:open")
	f(func() error { return b.Force(1) }, "1:open")
	f(func() error { return b.Fault(1, "sensor") }, "1:fault")
	if err := b.Open(4); !errors.Is(err, ErrUnknownDoor) {
		t.Fatalf("Open(4) = %v; want ErrUnknownDoor", err)
	}
	b.Stop()
	f(func() error { return b.Close(3) }) // stopped: reports nothing
}

func TestAutoClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := New(Config{Doors: 1, AutoClose: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r := &reports{}
		b.Watch(r.add)
		if err := b.Open(1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if s := b.States()[1]; s != contract.DoorOpen {
			t.Fatalf("door %s after 9 s; want open", s)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if s := b.States()[1]; s != contract.DoorClosed {
			t.Fatalf("door %s after 10 s; want closed by the auto-close", s)
		}
		b.Stop()
	})
}

func TestNewRefusesNoDoors(t *testing.T) {
	if _, err := New(Config{Doors: 0}); err == nil {
		t.Fatal("New with 0 doors succeeded")
	}
}

// TestHTTPShowsAJammedDoorAsJammed drives the controls over HTTP: GET
// /sim/doors tells a jammed door from a closed one, and an open command
// leaves the jammed door shut until it is unjammed.
func TestHTTPShowsAJammedDoorAsJammed(t *testing.T) {
	b, err := New(Config{Doors: 3})
	if err != nil {
		t.Fatal(err)
	}
	b.Watch(func(int, contract.DoorState) {})
	srv := httptest.NewServer(b.Handler())
	defer srv.Close()
	type door struct {
		Door   int    `json:"door"`
		State  string `json:"state"`
		Jammed bool   `json:"jammed"`
	}
	get := func() []door {
		t.Helper()
		resp, err := http.Get(srv.URL + "/sim/doors")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []door
		dec := json.NewDecoder(resp.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out); err != nil {
			t.Fatalf("GET /sim/doors: %v", err)
		}
		return out
	}
	post := func(path string) {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST %s: status %d; want 204", path, resp.StatusCode)
		}
	}
	want := func(doors ...door) {
		t.Helper()
		if got := get(); !reflect.DeepEqual(got, doors) {
			t.Fatalf("GET /sim/doors = %+v; want %+v", got, doors)
		}
	}
	want(door{1, "closed", false}, door{2, "closed", false}, door{3, "closed", false})
	post("/sim/doors/2/jam")
	want(door{1, "closed", false}, door{2, "closed", true}, door{3, "closed", false})
	if err := b.Open(2); err != nil {
		t.Fatal(err)
	}
	post("/sim/doors/3/force")
	want(door{1, "closed", false}, door{2, "closed", true}, door{3, "open", false})
	post("/sim/doors/2/unjam")
	want(door{1, "closed", false}, door{2, "closed", false}, door{3, "open", false})
}
