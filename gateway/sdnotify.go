package gateway

import (
	"context"
	"net"
	"os"
	"strconv"
	"time"
)

// sdNotify sends a state line to systemd when the gateway runs under a unit
// with Type=notify (NOTIFY_SOCKET set); otherwise it does nothing.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// watchdogLoop pings systemd's watchdog at half its interval while the
// gateway is ready (WatchdogSec in the unit; WATCHDOG_USEC set by systemd).
// A gateway that hangs stops pinging and systemd restarts it.
func (g *Gateway) watchdogLoop(ctx context.Context) {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(usec) * time.Microsecond / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if g.Ready() {
				if err := sdNotify("WATCHDOG=1"); err != nil {
					g.log.Warn("cannot ping the systemd watchdog", "err", err)
				}
			}
		}
	}
}
