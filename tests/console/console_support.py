"""Helpers for the virtio-console tests: a device/driver pair over an in-process bus,
a device on raw split rings the test writes as a (hostile) driver, a recording
backend, and non-blocking fd helpers for ptys."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xenvirtio.devices.console.config import ConsoleConfig
from xenvirtio.devices.console.device import VirtioConsoleDevice
from xenvirtio.drivers.console.driver import DEFAULT_RING_FEATURES, VirtioConsoleDriver
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.testing.inproc_bus import InProcessBus, Slot
from xenvirtio.testing.virtio_builders import SplitRingBuilder
from xenvirtio.transport.api import ActivationContext
from xenvirtio.transport.dma import DmaPool, DmaWindow
from xenvirtio.virtio.split import SplitDeviceQueue

WRITE = S.VIRTQ_DESC_F_WRITE
KINDS = [("mmio", "split"), ("mmio", "packed"), ("pci", "split"), ("pci", "packed")]
MEM_SIZE = 4 << 20
TIMEOUT = 10.0


@dataclass(eq=False)
class ConsoleRig:
    device: VirtioConsoleDevice
    driver: VirtioConsoleDriver
    mem: FlatMemory
    slot: Slot
    bus: InProcessBus
    dma: DmaPool


def make_rig(
    transport: str, ring: str, config: ConsoleConfig | None = None, **driver_args: Any
) -> ConsoleRig:
    """A console device and its guest driver on a fresh bus; call inside a running loop."""
    mem = FlatMemory(MEM_SIZE)
    device = VirtioConsoleDevice(config)
    bus = InProcessBus()
    window = DmaWindow(mem, 0x1000, MEM_SIZE - 0x1000)
    if transport == "mmio":
        slot = bus.add_mmio(device, mem, dma=window)
    else:
        slot = bus.add_pci(device, mem, dma=window)
    features = DEFAULT_RING_FEATURES
    if ring == "split":
        features &= ~(1 << S.VIRTIO_F_RING_PACKED)
    dma = DmaPool.for_transport(slot.transport)
    driver = VirtioConsoleDriver(slot.transport, dma, ring_features=features, **driver_args)
    slot.handler = driver.interrupt
    assert bool(driver.features >> S.VIRTIO_F_RING_PACKED & 1) == (ring == "packed")
    return ConsoleRig(device, driver, mem, slot, bus, dma)


async def read_until(fd: int, expected: bytes, timeout: float = TIMEOUT) -> bytes:
    """Read the non-blocking ``fd`` until ``expected`` has arrived; returns all read."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        async with asyncio.timeout(timeout):
            while expected not in got:
                await ready.wait()
                ready.clear()
                try:
                    got += os.read(fd, 65536)
                except BlockingIOError:
                    continue
    except TimeoutError:
        raise AssertionError(f"waited for {expected!r}, got {bytes(got[-200:])!r}") from None
    finally:
        loop.remove_reader(fd)
    return bytes(got)


async def read_exactly(fd: int, n: int, timeout: float = TIMEOUT) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        async with asyncio.timeout(timeout):
            while len(got) < n:
                await ready.wait()
                ready.clear()
                try:
                    got += os.read(fd, n - len(got))
                except BlockingIOError:
                    continue
    finally:
        loop.remove_reader(fd)
    return bytes(got)


async def write_all(fd: int, data: bytes, timeout: float = TIMEOUT) -> None:
    """Write all of ``data`` to the non-blocking ``fd``, waiting while it is full."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    ready = asyncio.Event()
    loop.add_writer(fd, ready.set)
    try:
        async with asyncio.timeout(timeout):
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    ready.clear()
                    await ready.wait()
    finally:
        loop.remove_writer(fd)


def open_pty() -> tuple[int, int]:
    """A pty pair with a non-blocking master (a user's terminal, for instance)."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    return master, slave


async def eventually(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait (polling the loop) until ``check()`` holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


async def settle(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


# ----------------------------------------------------------------------------- raw rings


@dataclass
class RecordingInterrupt:
    queues: list[int] = field(default_factory=list)
    configs: int = 0

    def trigger_queue(self, index: int) -> None:
        self.queues.append(index)

    def trigger_config(self) -> None:
        self.configs += 1


@dataclass
class FakeBackend:
    """A host side that records what the guest sent; ``blocked`` is its backlog state."""

    sent: bytearray = field(default_factory=bytearray)
    blocked: bool = False
    space_calls: int = 0
    block_after: int | None = None  # become blocked once this many bytes were sent

    def send(self, data: bytes) -> None:
        self.sent += data
        if self.block_after is not None and len(self.sent) >= self.block_after:
            self.blocked = True

    @property
    def send_blocked(self) -> bool:
        return self.blocked

    def input_space_available(self) -> None:
        self.space_calls += 1


@dataclass(eq=False)
class RawRig:
    """A device activated on two split rings (receiveq0, transmitq0) written by hand."""

    mem: FlatMemory
    rx: SplitRingBuilder
    tx: SplitRingBuilder
    device: VirtioConsoleDevice
    backend: FakeBackend
    irq: RecordingInterrupt
    resets: list[str]

    def used(self, ring: SplitRingBuilder) -> list[tuple[int, int]]:
        return [ring.used_elem(i) for i in range(ring.used_idx())]


def raw_rig(
    config: ConsoleConfig | None = None, features: int | None = None, connect: bool = True
) -> RawRig:
    mem = FlatMemory(1 << 20)
    device = VirtioConsoleDevice(config or ConsoleConfig(queue_size=16))
    if features is None:
        features = device.avail_features & ~(1 << S.VIRTIO_F_RING_PACKED)
    rx = SplitRingBuilder(mem, 16, base=0, features=features, index=0)
    tx = SplitRingBuilder(mem, 16, base=0x80000, features=features, index=1)
    backend = FakeBackend()
    if connect:
        device.connect(backend)
    irq = RecordingInterrupt()
    resets: list[str] = []
    queues: list[Any] = [SplitDeviceQueue(rx.config), SplitDeviceQueue(tx.config)]
    device.activate(ActivationContext(mem, queues, irq, features, resets.append))
    return RawRig(mem, rx, tx, device, backend, irq, resets)
