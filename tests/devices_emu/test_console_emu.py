"""virtio-console on every emu transport: the device model in dom0 on a pty, the
guest's `VirtioConsoleDriver` in a domain process answering each line in upper case.
A line typed into dom0's pty reaches the guest and the answer comes back out of it."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from emu_dev_support import TRANSPORTS, DeviceHost, guest_domain

from xenvirtio.devices.console.config import ConsoleConfig
from xenvirtio.devices.console.device import VirtioConsoleDevice
from xenvirtio.devices.console.engine import PtyPort
from xenvirtio.hv.api import Hypervisor


def read_until(fd: int, end: bytes, timeout: float = 10.0) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while not got.endswith(end):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {bytes(got)!r} came back"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            got += os.read(fd, 4096)
    return bytes(got)


@pytest.fixture(params=TRANSPORTS)
def host(request: pytest.FixtureRequest, run_dir: Path) -> Iterator[DeviceHost]:
    host = DeviceHost(run_dir, request.param)
    try:
        yield host
    finally:
        host.close()


@pytest.mark.parametrize("ring", ["split", "packed"])
def test_line_typed_into_the_pty_comes_back_answered(
    hv: Hypervisor, host: DeviceHost, ring: str
) -> None:
    device = VirtioConsoleDevice(ConsoleConfig(cols=100, rows=30))
    port = host.call(lambda: PtyPort(device))
    user = os.open(port.path, os.O_RDWR | os.O_NOCTTY)
    try:
        args = {"device": "console", "ring": ring}
        with guest_domain(hv, host, device, args, name=f"console-{host.transport}") as guest:
            ready = guest.wait_report("ready")
            assert ready["size"] == [100, 30]  # VIRTIO_CONSOLE_F_SIZE over this transport
            os.write(user, b"hello, guest\n")
            assert read_until(user, b"\n") == b"GUEST: HELLO, GUEST\n"
            os.write(user, b"second line\nthird ")
            os.write(user, b"and last\n")
            expected = b"GUEST: SECOND LINE\nGUEST: THIRD AND LAST\n"
            assert read_until(user, b"LAST\n") == expected
            result = guest.stop()
        assert result == {"lines": 3}
    finally:
        os.close(user)
        host.call(port.close)
