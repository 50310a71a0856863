// Package kerong drives "Kerong-style" RS485 locker boards: proprietary
// binary frames with an XOR checksum, up to 32 boards by DIP address on one
// bus, 8 to 48 locks each, lock feedback read by polling. A Bank implements
// the door handler's Driver (handlers/door).
//
// # Protocol
//
// Requests are five bytes; every frame ends with the XOR of the bytes before
// it:
//
//	unlock    8A board lock 11 xor    reply 8A board lock status xor
//	read all  80 board 00   33 xor    reply 80 board s(hi) … s(lo) 33 xor
//
// A read-all reply carries one status byte per eight channels, the highest
// group first (channels 17-24, 9-16, 1-8 on a 24-channel board); bit 0 of a
// byte is the lowest channel of its group. By default a set bit is a closed
// (locked) door; Door.OpenWhenSet inverts it. Channel 0 of an unlock request
// means every lock on the board and is never sent.
//
// # Documents followed (facts only, no code taken)
//
//   - Open-Locker ADR-0058, "Manage locker-board hardware profiles in the
//     backend" (github.com/Open-Locker/Open-Locker,
//     docs/adr/0058-backend-managed-rs485-locker-board-profile.md): the boards
//     use vendor binary frames with an XOR checksum; 8, 12, 18, 24, 36 or 50
//     channels; the standard firmware is polled for feedback, unsolicited
//     0x82 active feedback needs custom firmware and is not used; feedback
//     polarity differs between installations (feedback_type).
//   - A public Python driver for the same boards (found by its constants
//     0x8A/0x11 unlock, 0x80/0x33 read all): the frame layout above, the
//     example frames 80 01 00 33 B2, 8A 01 00 11 9A and the 24-channel reply
//     80 01 01 01 01 33 B3, the status byte order, 1 = locked, the unlock
//     reply status 00 = open / 11 = stayed closed, 9600 baud 8N1.
//   - The Kerong KR-CU16 documents: the vendor's Russian-language manual
//     (github.com/8lal8/kerongDocs, cu16.md and passCu16.md: 16 locks and 16
//     infrared occupancy sensors per board, DIP address, response under one
//     second, boards chained on one bus) and the kerong-lib client
//     (github.com/suryavirkapur/kerong-lib, README and kerong_client.hpp).
//
// # Where the documents disagree, and what this package does
//
//   - Frame family. The KR-CU16 documents describe a different frame:
//     STX 02, address, command (30 read state, 31 unlock), ETX 03 and a
//     modulo-256 SUM, not an XOR; the address byte holds the board in its
//     high nibble and the lock in its low nibble (16 boards of 16 locks);
//     19200 baud; the state reply (command 35) also carries occupancy bits.
//     That cannot address 32 boards of 48 locks and has no XOR, which SPEC
//     §10 requires, so this package implements the XOR family above. A
//     KR-CU16 (STX/ETX/SUM) codec would be one more frame file; it is not
//     written.
//   - Lock-bit polarity. The Python driver reads a set bit as locked;
//     kerong-lib reads a set bit as unlocked for the KR-CU16; ADR-0058 says
//     installations differ. The default is set = closed, configurable per
//     door.
//   - Channel counts. ADR-0058 lists up to 50 channels; SPEC and the issue
//     say 8..48. Config accepts 8..48; the decoder takes replies of up to
//     seven status bytes (50 channels).
//   - Baud. 9600 (Python driver) is the default; KR-CU16 documents say
//     19200; both are a Bus setting.
//   - The unlock reply's status byte is read by the board just after the
//     pulse. Door truth: it is only an acknowledgement here; open and closed
//     come from the read-all polls only.
//
// # Behaviour
//
// Each bus has one goroutine. A cycle sends one read-all request per board;
// queued unlock requests go before the next poll. States are reported only
// on change: unknown until a board is first read, then open or closed from
// the sensor bit. A board that does not answer, or answers with a bad
// checksum, Config.FaultAfter times in a row puts its doors in fault (reason
// "timeout: …" or "checksum: …") once per episode (one answer lost to noise
// is retried: a poll at the next cycle, an unlock at once); it is retried with back-off from PollInterval up to
// MaxBackoff and recovers by itself. An adapter that fails (unplugged) faults
// every door of the bus ("adapter unplugged: …") and is reopened with
// back-off until it is back. An unlock the board accepts without the sensor
// showing the door open within JamTimeout is a fault with reason "jammed".
//
// Metrics, all with a bus label: locky_kerong_frames_sent_total{kind},
// locky_kerong_errors_total{kind=timeout|checksum|unplugged},
// locky_kerong_response_latency_seconds, locky_kerong_poll_cycle_seconds,
// locky_kerong_boards_unreachable, locky_kerong_opens_dropped_total (unlocks
// that waited past OpenWait for their bus, or whose adapter went away).
//
// Known limit: an adapter that echoes the host's own bytes would make a
// read-all request of an 8-channel board look like its reply (all doors
// open); the usual USB-RS485 adapters do not echo.
//
// Its place in the layering: a driver, on the contract only.
package kerong
