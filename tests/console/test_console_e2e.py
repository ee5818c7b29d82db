"""virtio-console end to end in one process: a user's terminal (a pty pair) attached
with the attach helper to the console's pty, the device model, virtio-mmio or
virtio-pci, split or packed rings, the guest driver, and a program inside the guest
that answers over the driver's asyncio streams."""

from __future__ import annotations

import asyncio
import os
import signal
import termios

import pytest
from console_support import (
    KINDS,
    eventually,
    make_rig,
    open_pty,
    read_exactly,
    read_until,
    settle,
    write_all,
)

from xenvirtio.devices.console.attach import ConsoleAttach, DetachReason
from xenvirtio.devices.console.config import ConsoleConfig
from xenvirtio.devices.console.engine import PtyPort, get_winsize, set_winsize
from xenvirtio.drivers.console.driver import emergency_write

pytestmark = pytest.mark.parametrize(("transport", "ring"), KINDS)


async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The program inside the guest: answer every line in upper case."""
    while line := await reader.readline():
        writer.write(b"GUEST: " + line.upper())
        await writer.drain()


def test_typed_into_the_pty_reaches_the_guest_and_the_answer_comes_back(
    transport: str, ring: str
) -> None:
    async def scenario() -> None:
        rig = make_rig(transport, ring)
        guest = asyncio.create_task(shout(rig.driver.reader, rig.driver.writer))
        user_master, user_slave = open_pty()  # the user's terminal
        cooked = termios.tcgetattr(user_slave)
        with PtyPort(rig.device) as port:
            helper = ConsoleAttach(port.path, stdin=user_slave, stdout=user_slave)
            attached = asyncio.create_task(helper.run())
            await asyncio.wait_for(helper.ready.wait(), 5)
            assert termios.tcgetattr(user_slave) != cooked  # raw while attached
            await write_all(user_master, b"hello, guest\n")
            out = await read_until(user_master, b"GUEST: HELLO, GUEST\n")
            assert out == b"GUEST: HELLO, GUEST\n"  # raw both ways: no echo, no CRLF
            await write_all(user_master, b"second line\nthird")
            await read_until(user_master, b"GUEST: SECOND LINE\n")
            await write_all(user_master, b" part\x1dnot sent\n")  # Ctrl-] detaches
            assert await asyncio.wait_for(attached, 5) is DetachReason.ESCAPE
            assert termios.tcgetattr(user_slave) == cooked  # the terminal is restored
            # The bytes typed before the escape reached the guest, those after did not.
            pending = rig.driver.reader._buffer  # type: ignore[attr-defined]
            await eventually(lambda: bytes(pending) == b"third part")
            await asyncio.sleep(0.05)
            assert bytes(pending) == b"third part" and rig.device.input_pending == 0
        guest.cancel()
        rig.driver.close()
        os.close(user_master)
        os.close(user_slave)

    asyncio.run(scenario())


def test_resize_reaches_the_guest(transport: str, ring: str) -> None:
    async def scenario() -> None:
        rig = make_rig(transport, ring, config=ConsoleConfig(cols=80, rows=25))
        assert rig.driver.size == (80, 25)
        with PtyPort(rig.device, size_poll=0.02) as port:
            assert get_winsize(port.master) == (80, 25)
            seen = asyncio.ensure_future(rig.driver.wait_resize())
            port.resize(132, 43)  # from the host side
            assert await asyncio.wait_for(seen, 5) == (132, 43)
            # A user's terminal resized while attached: the helper copies its size to the
            # console pty and the port notices it on its next poll.
            user_master, user_slave = open_pty()
            set_winsize(user_slave, 100, 30)
            helper = ConsoleAttach(port.path, stdin=user_slave, stdout=user_slave)
            attached = asyncio.create_task(helper.run())
            seen = asyncio.ensure_future(rig.driver.wait_resize())
            assert await asyncio.wait_for(seen, 5) == (100, 30)
            set_winsize(user_slave, 120, 50)
            seen = asyncio.ensure_future(rig.driver.wait_resize())
            os.kill(os.getpid(), signal.SIGWINCH)  # what a terminal sends on a resize
            assert await asyncio.wait_for(seen, 5) == (120, 50)
            assert helper.sync_size() == (120, 50)
            assert rig.driver.size == rig.device.size == (120, 50)
            await write_all(user_master, b"\x1d")
            assert await asyncio.wait_for(attached, 5) is DetachReason.ESCAPE
            os.close(user_master)
            os.close(user_slave)
        rig.driver.close()

    asyncio.run(scenario())


def test_input_waits_for_a_guest_that_reads_slowly(transport: str, ring: str) -> None:
    """Flow control host -> guest: a small device input bound and a guest that paused
    reading; 200 KiB typed into the pty all arrive, in order, nothing lost."""
    payload = bytes(i * 7 % 251 for i in range(200 * 1024))

    async def scenario() -> None:
        config = ConsoleConfig(input_limit=2048)
        rig = make_rig(transport, ring, config=config, read_limit=4096, rx_buffers=4)
        with PtyPort(rig.device) as port:
            user = os.open(port.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            typing = asyncio.create_task(write_all(user, payload, timeout=30))
            await asyncio.sleep(0.05)
            # The guest has not read: the reader paused, the device holds its bound.
            assert not typing.done()
            assert rig.device.input_pending <= config.input_limit
            # The reader pauses above twice its limit; buffers already used still land.
            buffered = len(rig.driver.reader._buffer)  # type: ignore[attr-defined]
            assert 2 * 4096 < buffered <= 2 * 4096 + 4 * 1024
            got = await rig.driver.reader.readexactly(len(payload))
            await typing
            assert got == payload
            os.close(user)
        rig.driver.close()

    asyncio.run(scenario())


def test_output_waits_while_nobody_reads_the_pty(transport: str, ring: str) -> None:
    """Flow control guest -> host: the port's backlog is bounded, the guest's drain()
    waits, and everything comes out in order once a user reads."""
    payload = bytes(i * 13 % 253 for i in range(600 * 1024))

    async def scenario() -> None:
        rig = make_rig(transport, ring)
        with PtyPort(rig.device, output_limit=16 * 1024) as port:
            user = os.open(port.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

            async def send() -> None:
                rig.driver.writer.write(payload)
                await rig.driver.writer.drain()

            sending = asyncio.create_task(send())
            await asyncio.sleep(0.1)
            assert not sending.done()  # the pty is full and nobody reads it
            assert port.output_pending < 16 * 1024 + 4096
            got = await read_exactly(user, len(payload), timeout=30)
            await asyncio.wait_for(sending, 10)
            assert got == payload
            os.close(user)
        rig.driver.close()

    asyncio.run(scenario())


def test_emergency_write_works_on_an_unconfigured_device(transport: str, ring: str) -> None:
    async def scenario() -> None:
        rig = make_rig(transport, ring)
        with PtyPort(rig.device) as port:
            user = os.open(port.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            rig.driver.emergency_write(b"oops\n")
            assert await read_until(user, b"oops\n") == b"oops\n"
            rig.driver.close()  # device reset: no driver, no queues
            emergency_write(rig.slot.transport, b"panic!\n")  # 5.3.5.1: still accepted
            assert await read_until(user, b"panic!\n") == b"panic!\n"
            os.close(user)

    asyncio.run(scenario())


def test_closing_the_port_hangs_up_the_attached_terminal(transport: str, ring: str) -> None:
    async def scenario() -> None:
        rig = make_rig(transport, ring)
        user_master, user_slave = open_pty()
        port = PtyPort(rig.device)
        helper = ConsoleAttach(port.path, stdin=user_slave, stdout=user_slave)
        attached = asyncio.create_task(helper.run())
        await asyncio.wait_for(helper.ready.wait(), 5)
        rig.driver.writer.write(b"bye\n")
        await read_until(user_master, b"bye\n")
        port.close()
        assert await asyncio.wait_for(attached, 5) is DetachReason.HANGUP
        await settle()
        rig.driver.close()
        os.close(user_master)
        os.close(user_slave)

    asyncio.run(scenario())
