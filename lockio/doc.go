// Package lockio holds the locker's hardware drivers, one sub-package each:
// simdoors is the simulated door bank; webkiosk is the touchscreen served as a
// web page. Real door-lock boards speak the door topics of the contract
// directly over MQTT (run the gateway with --sim-doors 0).
package lockio
