package simdoors

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Handler serves the simulator's controls:
//
//	GET  /sim/doors                  every door's state, and whether it is jammed:
//	                                 [{"door":1,"state":"closed","jammed":false},…]
//	POST /sim/doors/{door}/close     close a door (a person pushes it shut)
//	POST /sim/doors/{door}/force     open a door without a command
//	POST /sim/doors/{door}/fault     make a door report a fault
//	POST /sim/doors/{door}/jam       make a door ignore open commands
//	POST /sim/doors/{door}/unjam     make it obey them again
func (b *Bank) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sim/doors", func(w http.ResponseWriter, _ *http.Request) {
		// A jammed door is shut and stays so whatever it is told: its state
		// is what it reports (closed, say), the jam is the simulator's own.
		type door struct {
			Door   int    `json:"door"`
			State  string `json:"state"`
			Jammed bool   `json:"jammed"`
		}
		states, jammed := b.States(), b.Jammed()
		out := make([]door, 0, len(states))
		for _, d := range b.Doors() {
			out = append(out, door{d, states[d], jammed[d]})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /sim/doors/{door}/{action}", func(w http.ResponseWriter, r *http.Request) {
		door, err := strconv.Atoi(r.PathValue("door"))
		if err != nil {
			http.Error(w, "door must be a number", http.StatusBadRequest)
			return
		}
		switch r.PathValue("action") {
		case "close":
			err = b.Close(door)
		case "force":
			err = b.Force(door)
		case "fault":
			err = b.Fault(door, "simulated fault")
		case "jam":
			err = b.Jam(door, true)
		case "unjam":
			err = b.Jam(door, false)
		default:
			http.Error(w, "action must be close, force, fault, jam or unjam", http.StatusNotFound)
			return
		}
		if errors.Is(err, ErrUnknownDoor) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
