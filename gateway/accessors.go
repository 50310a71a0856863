package gateway

import (
	"time"

	"github.com/locky-edge/locky/gateway/broker"
	"github.com/locky-edge/locky/handlers/screen"
	"github.com/locky-edge/locky/lockio/simdoors"
	"github.com/locky-edge/locky/lockio/web"
)

// Broker returns the gateway's embedded broker.
func (g *Gateway) Broker() *broker.Broker { return g.broker }

// Sim returns the simulated door bank, or nil when an external client plays
// the doors (--sim-doors 0).
func (g *Gateway) Sim() *simdoors.Bank { return g.sim }

// Screen returns the handler through which the web kiosk enters codes.
func (g *Gateway) Screen() *screen.Handler { return g.screen }

// Started returns when the gateway was created, for its uptime.
func (g *Gateway) Started() time.Time { return g.started }

// PageStore returns the store as the pages read it (web.Store).
func (g *Gateway) PageStore() web.Store { return webStore{g.store} }
