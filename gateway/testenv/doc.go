// Package testenv is test support shared by the gateway's packages: a real
// Mosquitto broker run from /usr/sbin/mosquitto on a free loopback port, a TCP
// proxy whose link a test can cut, a free port finder and a logger that writes
// to the test's log.
//
// Everything it starts is stopped by t.Cleanup. It waits for readiness by
// polling a TCP connect with a deadline, never by sleeping a fixed time.
//
// Its place in the layering: test support below everything; it imports
// nothing of the locker, so the tests of every layer may use it.
package testenv
