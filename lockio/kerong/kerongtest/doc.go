// Package kerongtest is test support for the Kerong driver (lockio/kerong)
// and for the tests that run the gateway on it: an emulator of the lock
// boards on a socat pty pair.
//
// The emulator is written from the protocol description in lockio/kerong's
// package comment, not from the driver: it has its own frame building and
// its own checksum, and it does not import lockio/kerong, so that a mistake
// in the driver's reading of the protocol cannot hide in both. Keep it so.
//
//	request  unlock:   8A addr lock 11 chk   reply 8A addr lock st chk
//	request  read all: 80 addr 00   33 chk   reply 80 addr s(hi)…s(lo) 33 chk
//
// chk is the XOR of the bytes before it; a status bit is set while the door
// is closed; st is 00 once the lock released, 11 if it stayed closed.
//
// The pty pair needs socat (the apt package socat); StartSocat fails the
// test, naming the package, when it is missing.
//
// Its place in the layering: test support beside the driver it emulates; it
// imports nothing of the locker.
package kerongtest
