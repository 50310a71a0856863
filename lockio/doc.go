// Package lockio holds the locker's hardware drivers, one sub-package each:
// simdoors is the simulated door bank; web is the touchscreen served as a web
// kiosk, with the locker page that shows the doors. Real door-lock boards speak
// the door topics of the contract directly over MQTT (run the gateway with
// --sim-doors 0).
//
// Its place in the layering: the drivers, on the contract only; the gateway
// hands them to the handlers.
package lockio
