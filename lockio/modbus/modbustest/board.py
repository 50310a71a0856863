#!/usr/bin/env python3
"""A Modbus RTU relay/input board for the tests of lockio/modbus and of the
gateway on it (lockio/modbus/modbustest embeds it and runs it).

It serves one or more units on a serial port with pymodbus's RTU serial
server (written against pymodbus 3.0.0, Debian bookworm's python3-pymodbus).
Each unit has COILS coils (the lock relays) and INPUTS discrete inputs (the
door sensors), addressed from 0 (zero_mode).

The test drives it through stdin, one command a line, each acknowledged on
stdout with "ok <command>":

    set <unit> <input> <0|1>   a door sensor changes
    mute <unit>                the unit stops answering (a dead board)
    unmute <unit>              it answers again
    garble <n> [<function>]    the CRC of the next n replies (to that
                               function code only, if given) is damaged,
                               as noise on the bus does; 0 stops it

and it reports on stdout:

    ready                      the serial port is open and served
    coil <unit> <addr> <0|1>   a coil was written (the lock relay)

It ends when stdin closes, so it never outlives the test.
"""

import argparse
import asyncio
import sys
import threading

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.exceptions import NoSuchSlaveException
from pymodbus.framer.rtu_framer import ModbusRtuFramer
from pymodbus.server.async_io import ModbusSerialServer

_out = threading.Lock()


def say(line):
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class CoilBlock(ModbusSequentialDataBlock):
    """Coils that tell the test when they are written."""

    def __init__(self, unit, count):
        super().__init__(0, [False] * count)
        self.unit = unit

    def setValues(self, address, values):  # pylint: disable=invalid-name
        super().setValues(address, values)
        if not isinstance(values, list):
            values = [values]
        for i, v in enumerate(values):
            say(f"coil {self.unit} {address + i} {1 if v else 0}")


class MutableContext(ModbusServerContext):
    """A server context whose units can be muted: a muted unit is missing,
    and with ignore_missing_slaves the server sends nothing back."""

    def __init__(self, slaves):
        super().__init__(slaves=slaves, single=False)
        self.muted = set()
        self.garble = 0
        self.garble_function = None

    def damage(self, data):
        """Returns data with its CRC damaged while garbling is on."""
        if self.garble <= 0 or len(data) < 4:
            return data
        if self.garble_function is not None and data[1] & 0x7F != self.garble_function:
            return data
        self.garble -= 1
        return data[:-1] + bytes([data[-1] ^ 0xFF])

    def __getitem__(self, slave):
        if slave in self.muted:
            raise NoSuchSlaveException(f"unit {slave} is muted")
        return super().__getitem__(slave)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", required=True)
    ap.add_argument("--units", default="1", help="comma-separated unit addresses")
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args()

    units = [int(u) for u in args.units.split(",")]
    slaves = {}
    for u in units:
        slaves[u] = ModbusSlaveContext(
            di=ModbusSequentialDataBlock(0, [False] * args.inputs),
            co=CoilBlock(u, args.coils),
            hr=ModbusSequentialDataBlock(0, [0]),
            ir=ModbusSequentialDataBlock(0, [0]),
            zero_mode=True,
        )
    context = MutableContext(slaves)
    asyncio.run(serve(args, context))


def command(context, line):
    parts = line.split()
    if not parts:
        return
    if parts[0] == "set" and len(parts) == 4:
        unit, addr, value = int(parts[1]), int(parts[2]), parts[3] == "1"
        ModbusServerContext.__getitem__(context, unit).store["d"].setValues(addr, [value])
    elif parts[0] == "mute" and len(parts) == 2:
        context.muted.add(int(parts[1]))
    elif parts[0] == "unmute" and len(parts) == 2:
        context.muted.discard(int(parts[1]))
    elif parts[0] == "garble" and len(parts) in (2, 3):
        context.garble = int(parts[1])
        context.garble_function = int(parts[2]) if len(parts) == 3 else None
    else:
        say(f"error unknown command {line}")
        return
    say(f"ok {line}")


async def serve(args, context):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    server = ModbusSerialServer(
        context,
        ModbusRtuFramer,
        port=args.port,
        baudrate=args.baud,
        ignore_missing_slaves=True,
    )
    await server.start()
    if server.transport is None:
        say(f"error cannot open {args.port}")
        sys.exit(1)
    write = server.transport.write
    server.transport.write = lambda data: write(context.damage(data))
    say("ready")

    def read_stdin():
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, context, line.strip())
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=read_stdin, daemon=True).start()
    await done
    await server.shutdown()


if __name__ == "__main__":
    main()
