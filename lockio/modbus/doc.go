// Package modbus drives Modbus RTU relay/input boards (Waveshare-style) as a
// bank of door locks: a coil pulses a door's lock, a discrete input reads its
// door sensor.
//
// Door truth, not relay truth: an open command only pulses the coil (on, wait
// Config.PulseLength, off); a door's state comes from its sensor alone and is
// reported when it changes. A pulse accepted by the board whose sensor does
// not change within Config.JamTimeout is a `fault` with reason "jammed",
// until the reading changes. A board that does not answer (timeout, bad CRC,
// a Modbus exception) Config.FaultAfter times in a row, or an unplugged
// adapter, turns its doors into `fault` with the reason, once per episode;
// one reply lost to noise is only retried (a lock pulse at once, a poll on
// the next cycle). The board is retried with back-off and its doors report
// their real state again when it answers. A door whose sensor has never
// been read is `unknown`, never guessed closed.
//
// A door may also have an occupancy (infrared) input, Door.Occupancy: its
// states then carry contract.DoorState.Occupied, and a parcel put in or
// taken out behind a closed door is reported as a new state too, so that
// the controller decides at the closing with the latest occupancy.
//
// One goroutine owns each serial bus. On it, a due coil-off goes first, then
// queued open commands, then polls; a poll reads all of a board's discrete
// inputs (sensor and occupancy) in one request and every board of the bus
// is polled in each cycle.
// An open command waits at most for the exchange under way; with a board
// down that can be one Config.Timeout (its retry), so keep Timeout short.
//
// Metrics, all with a bus label: locky_modbus_frames_sent_total{kind=coil|poll},
// locky_modbus_errors_total{kind=timeout|crc|frame|exception|unplugged},
// locky_modbus_response_latency_seconds, locky_modbus_poll_cycle_seconds,
// locky_modbus_boards_unreachable, locky_modbus_opens_dropped_total (open
// commands dropped: queue full, or waited longer than Config.OpenWait for a
// lost bus).
// The names and labels match lockio/kerong's, for one dashboard.
//
// The RTU client is this package's own (rtu.go), on go.bug.st/serial: two
// function codes (05 write single coil, 02 read discrete inputs), with the
// response timeout and the inter-frame silence (t3.5) under our control.
//
// Its place in the layering: a driver, on the contract only; it implements
// handlers/door.Driver.
package modbus
