package metricspush_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/metricspush"
)

// The gateway pushes what GET /metrics serves, counting the pushes in its own
// set; Run pushes every Interval until the context ends, Close stops it.
func ExampleNew() {
	vm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.URL.Path, r.URL.Query()["extra_label"])
		w.WriteHeader(http.StatusNoContent)
	}))
	defer vm.Close()

	set := metrics.NewSet() // the gateway's set
	p, err := metricspush.New(metricspush.Config{
		URL:      vm.URL + "/api/v1/import/prometheus",
		LockerID: "locker-0001",
		Metrics:  set,
		Write: func(w io.Writer) {
			metrics.WriteProcessMetrics(w)
			set.WritePrometheus(w)
		},
	})
	if err != nil {
		panic(err) // names the field to fix
	}
	defer p.Close()
	if err := p.Push(context.Background()); err != nil { // Run(ctx) does this every Interval
		panic(err)
	}
	// Output: /api/v1/import/prometheus [locker=locker-0001]
}
