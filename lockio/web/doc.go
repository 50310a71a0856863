// Package web serves the locker's own pages (SPEC §8): the locker page, where
// every door is a tile that follows the door's state and its parcel live and an
// open simulated door closes with a click, and the kiosk page, a keypad that
// enters codes exactly as the real touchscreen does. A door that did not open
// on command shows at fault, with the reason, until it works again, even
// when the door itself reported nothing (the locker's door.fault event).
//
// The pages are plain HTML, CSS and JavaScript embedded in the binary. They
// learn of changes through server-sent events (/events), fed by the package's
// subscriptions to the door states, the upstream events and the acks on the
// local broker; the browser never polls.
//
// In dev mode the locker page also has test helpers: create a test
// reservation on a free door (its codes are shown once), and remove the test
// reservations that hold no parcel. Both go through locky/down/reservations
// like any back-end message. Outside dev mode they do not exist (404).
//
// Routes of Handler:
//
//	GET  /                       the locker page
//	GET  /kiosk                  the kiosk page
//	GET  /events                 server-sent events: the locker's state, as JSON
//	GET  /api/state              the same state, once
//	GET  /assets/…               style sheet and scripts
//	POST /api/kiosk/code         {"code":"123456"} → the display answer; 400 naming the
//	                             problem for a body locky/screen/code refuses (duplicate keys too)
//	POST /api/doors/{door}/close close a simulated door
//	POST /api/test/reservations  {"door":7} → a test reservation and its codes (dev mode)
//	POST /api/test/cleanup       remove test reservations without a parcel (dev mode)
//
// Its place in the layering: a driver, on the contract only; it reads the
// locker's state through its Store interface, which the gateway satisfies.
package web
