// Package modbustest is test support for the Modbus RTU driver (lockio/modbus)
// and for the tests that run the gateway on it: a relay/input board served by
// pymodbus's RTU server (board.py, embedded) on one end of a socat pty pair,
// the driver on the other.
//
// The board is pymodbus, not code of ours, and this package does not import
// lockio/modbus, so that a mistake in the driver's reading of the protocol
// cannot hide in both. Keep it so.
//
// A test drives the board with Bus.Do:
//
//	set <unit> <input> <0|1>   a door sensor changes
//	mute <unit>                the unit stops answering (a dead board)
//	unmute <unit>              it answers again
//
// and sees each coil write (a lock pulse) with Bus.AwaitCoil, as
// "coil <unit> <addr> <0|1>".
//
// It needs socat and a python3 with pymodbus and pyserial (the apt packages
// socat, python3-pymodbus and python3-serial); StartBus fails the test,
// naming the packages, when one is missing.
//
// Its place in the layering: test support beside the driver it serves a
// board to; it imports nothing of the locker.
package modbustest
