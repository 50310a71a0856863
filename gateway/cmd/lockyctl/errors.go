package main

import (
	"errors"
	"fmt"

	"github.com/eclipse/paho.golang/packets"
)

// The errors of lockyctl's commands. run exits 2 on a usageError, 1 on any
// other.

// usageError is a bad command line.
type usageError struct{ error }

// errNoURL is returned when neither --url nor LOCKYCTL_URL names the broker.
var errNoURL = usageError{errors.New("no broker: give the cloud broker's address with --url mqtt://host:port (or mqtts://), or set LOCKYCTL_URL")}

// refusedError is a CONNACK that refused the connection.
type refusedError struct {
	url  string
	code byte
}

func (e refusedError) Error() string {
	return fmt.Sprintf("%s refused the connection: %s (check --username and --password, and that --url is the cloud broker)",
		e.url, (&packets.Connack{ReasonCode: e.code}).Reason())
}

// linkError is a failure of the network or of the broker's process, which
// may pass: a command that keeps a connection up retries.
type linkError struct{ error }

func (e linkError) Unwrap() error { return e.error }

// serverDisconnect is a DISCONNECT the broker sent.
type serverDisconnect struct {
	reason string
	code   byte
}

func (d serverDisconnect) Error() string { return "the broker disconnected us: " + d.reason }

// subscriptionRefused is a SUBACK that refused a subscription.
type subscriptionRefused struct {
	filter  string
	reasons []byte
}

func (e subscriptionRefused) Error() string {
	return fmt.Sprintf("the broker refused the subscription to %s (reason codes %#x): check the ACL of --username", e.filter, e.reasons)
}

// errLocalBroker is returned when --url is a locker's local broker.
func errLocalBroker(url string) error {
	return fmt.Errorf("%s is a locker's local broker (it holds %s and no lockers/{id}/status): give the cloud broker's address with --url", url, doorStateFilter)
}

// errCounted ends a watch that printed --count events.
var errCounted = errors.New("printed --count events")
