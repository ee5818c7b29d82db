"""Guest driver and device model in two processes, as a guest and its backend would be:
guest RAM is one shared mapping, every virtio-mmio register access crosses a socket (as
an ioreq would), interrupts come back on another. Then the device process is killed with
requests in flight, a new one takes over, and the driver's ``reconnect`` replays them."""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from blk_support import Model, make_image, workload

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import ThreadPoolEngine
from xenvirtio.drivers.blk.driver import VirtioBlkDriver
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.transport.dma import DmaWindow
from xenvirtio.transport.events import InterruptLine
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.mmio.driver import VirtioMmioDriver

MEM = 16 << 20
SIZE = 4 << 20
ACCESS = struct.Struct("<BQIQ")  # write?, address, size, value
WAIT = 10.0


def _device_process(image: Path, mm: mmap.mmap, access: socket.socket, irq: socket.socket,
                    delay: float) -> None:  # fmt: skip
    """The backend: serve register accesses and engine completions until the guest
    hangs up."""
    if delay:
        real = os.pwritev

        def slow(fd: int, bufs: list[memoryview], offset: int, *flags: int) -> int:
            time.sleep(delay)
            return real(fd, bufs, offset, *flags)

        os.pwritev = slow  # type: ignore[assignment]
    engine = ThreadPoolEngine(4)
    wake_r, wake_w = os.pipe()
    device = VirtioBlkDevice(BlockFile(image), BlkConfig(), engine, lambda: os.write(wake_w, b"!"))
    window = VirtioMmioDevice(device, FlatMemory(buffer=mm))

    def interrupts() -> None:
        if any(isinstance(ev, InterruptLine) and ev.asserted for ev in window.take_events()):
            irq.send(b"i")

    while True:
        ready, _, _ = select.select([access, wake_r], [], [], WAIT)
        if wake_r in ready:
            os.read(wake_r, 4096)
            device.poll()
            interrupts()
        if access in ready:
            raw = access.recv(ACCESS.size, socket.MSG_WAITALL)
            if len(raw) < ACCESS.size:
                return
            write, address, size, value = ACCESS.unpack(raw)
            if write:
                window.write(address, size, value)
            else:
                value = window.read(address, size)
            access.sendall(struct.pack("<Q", value))
            interrupts()


class SocketBus:
    """`MmioBus` whose accesses travel to the device process."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    def _go(self, write: int, address: int, size: int, value: int) -> int:
        assert self.sock is not None
        self.sock.sendall(ACCESS.pack(write, address, size, value))
        raw = self.sock.recv(8, socket.MSG_WAITALL)
        if len(raw) != 8:
            raise ConnectionError("device process went away")
        return int(struct.unpack("<Q", raw)[0])

    def read(self, address: int, size: int) -> int:
        return self._go(0, address, size, 0)

    def write(self, address: int, size: int, value: int) -> None:
        self._go(1, address, size, value)


class Backend:
    """Starts, kills and reaps device processes sharing one guest RAM mapping."""

    def __init__(self, image: Path, mm: mmap.mmap) -> None:
        self.image, self.mm = image, mm
        self.pids: list[int] = []

    def start(self, delay: float = 0.0) -> tuple[socket.socket, socket.socket]:
        access, access_child = socket.socketpair()
        irq, irq_child = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the device process
            code = 0
            try:
                access.close()
                irq.close()
                _device_process(self.image, self.mm, access_child, irq_child, delay)
            except BaseException:
                code = 1
            os._exit(code)
        self.pids.append(pid)
        access_child.close()
        irq_child.close()
        return access, irq

    def kill(self) -> None:
        pid = self.pids.pop()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def close(self) -> None:
        while self.pids:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                self.kill()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    image = make_image(tmp_path / "disk.img", SIZE, bytes(range(251)))
    mm = mmap.mmap(-1, MEM, mmap.MAP_SHARED)
    be = Backend(image, mm)
    try:
        yield be
    finally:
        be.close()
        with contextlib.suppress(BufferError):  # views may outlive the test until GC
            mm.close()


class Guest:
    """The guest side: its bus to the current device process and its interrupt socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.bus = SocketBus()
        self.irq: socket.socket | None = None
        self.driver: VirtioBlkDriver | None = None

    def connect(self, socks: tuple[socket.socket, socket.socket]) -> None:
        """Switch to a (new) device process."""
        for old in (self.bus.sock, self.irq):
            if old is not None:
                with contextlib.suppress(ValueError, KeyError):
                    self.loop.remove_reader(old)
                old.close()
        self.bus.sock, self.irq = socks
        self.loop.add_reader(self.irq, self._on_irq)

    def _on_irq(self) -> None:
        assert self.irq is not None
        if not self.irq.recv(4096):
            self.loop.remove_reader(self.irq)
        elif self.driver is not None:
            self.driver.interrupt()

    def open_driver(self, mm: mmap.mmap) -> VirtioBlkDriver:
        mem = FlatMemory(buffer=mm)
        window = DmaWindow(mem, 0x1000, MEM - 0x1000)
        self.driver = VirtioBlkDriver(VirtioMmioDriver(self.bus, 0, dma=window))
        return self.driver

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
        self.connect((socket.socket(), socket.socket()))  # drop the last process's sockets
        assert self.irq is not None
        self.loop.remove_reader(self.irq)


def test_driver_and_device_in_two_processes(backend: Backend) -> None:
    model = Model(backend.image.read_bytes())

    async def main() -> None:
        guest = Guest(asyncio.get_running_loop())
        guest.connect(backend.start())
        drv = guest.open_driver(backend.mm)
        try:
            await asyncio.wait_for(workload(drv, model, 11, rounds=10), WAIT * 3)
        finally:
            guest.close()

    asyncio.run(main())
    model.check(0, backend.image.read_bytes())


def test_a_restarted_device_process_gets_the_requests_in_flight(backend: Backend) -> None:
    expected = b"".join(bytes([i + 1]) * 4096 for i in range(16))

    async def main() -> int:
        guest = Guest(asyncio.get_running_loop())
        guest.connect(backend.start(delay=0.2))  # 16 slow writes, 4 workers: >= 0.8 s
        drv = guest.open_driver(backend.mm)
        writes = [asyncio.ensure_future(drv.write(i * 4096, expected[i * 4096 : (i + 1) * 4096]))
                  for i in range(16)]  # fmt: skip
        await asyncio.sleep(0.12)
        assert not all(w.done() for w in writes)
        backend.kill()  # the backend dies with requests in flight
        guest.connect(backend.start())  # a new backend process takes over
        drv.reconnect()  # what the transport layer calls on reconnect
        try:
            await asyncio.wait_for(asyncio.gather(*writes), WAIT)
            await drv.flush()
            assert await drv.read(0, len(expected)) == expected
        finally:
            guest.close()
        return drv.reconnects

    assert asyncio.run(main()) == 1
    assert backend.image.read_bytes()[: len(expected)] == expected
