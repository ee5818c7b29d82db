"""The attach helper on its own: a plain pty pair stands for the console's pty, pipes
and ptys for the user's terminal."""

from __future__ import annotations

import asyncio
import os
import termios

import pytest
from console_support import eventually, open_pty, read_until, write_all

from xenvirtio.devices.console.attach import ConsoleAttach, DetachReason, attach


def test_blocking_attach_detaches_on_ctrl_right_bracket() -> None:
    async def scenario() -> None:
        console_master, console_slave = open_pty()  # stands for a console's pty
        user_master, user_slave = open_pty()
        cooked = termios.tcgetattr(user_slave)
        path = os.ttyname(console_slave)
        done = asyncio.ensure_future(
            asyncio.to_thread(attach, path, stdin=user_slave, stdout=user_slave)
        )
        await eventually(lambda: termios.tcgetattr(user_slave) != cooked)
        await write_all(user_master, b"ls\r")
        assert await read_until(console_master, b"ls\r") == b"ls\r"  # raw: CR stays CR
        await write_all(console_master, b"out\n")
        assert await read_until(user_master, b"out\n") == b"out\n"
        await write_all(user_master, b"\x1d")
        assert await asyncio.wait_for(done, 5) is DetachReason.ESCAPE
        assert termios.tcgetattr(user_slave) == cooked
        assert os.get_blocking(user_slave)  # flags restored too
        for fd in (console_master, console_slave, user_master, user_slave):
            os.close(fd)

    asyncio.run(scenario())


def test_pipes_end_of_input_and_a_custom_escape() -> None:
    async def scenario() -> None:
        console_master, console_slave = open_pty()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        os.set_blocking(out_r, False)
        helper = ConsoleAttach(os.ttyname(console_slave), stdin=in_r, stdout=out_w, escape=0x01)
        run = asyncio.create_task(helper.run())
        await asyncio.wait_for(helper.ready.wait(), 5)
        assert helper.sync_size() is None  # pipes have no window size
        os.write(in_w, b"\x1d is data here\n")
        assert await read_until(console_master, b"here\n") == b"\x1d is data here\n"
        await write_all(console_master, b"reply")
        assert await read_until(out_r, b"reply") == b"reply"
        os.close(in_w)  # the user's input ends
        assert await asyncio.wait_for(run, 5) is DetachReason.EOF
        for fd in (console_master, console_slave, in_r, out_r, out_w):
            os.close(fd)

    asyncio.run(scenario())


def test_bad_escape_is_refused() -> None:
    with pytest.raises(ValueError):
        ConsoleAttach("/dev/null", escape=256)
