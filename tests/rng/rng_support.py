"""Helpers for the virtio-rng tests: deterministic entropy, a simulated clock, a whole
device/driver pair over an in-process bus, and a device on a raw split ring that the
test writes as a (hostile) driver."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from xenvirtio.devices.rng.config import RngConfig
from xenvirtio.devices.rng.device import VirtioRngDevice
from xenvirtio.devices.rng.engine import EntropySource, TimerPort
from xenvirtio.drivers.rng.driver import DEFAULT_RING_FEATURES, VirtioRngDriver
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


class SeededSource:
    """A deterministic entropy source: one fixed stream per seed, however it is sliced
    into reads; ``produced`` is everything it handed out."""

    STREAM = 1 << 20

    def __init__(self, seed: int = 1) -> None:
        self._stream = random.Random(seed).randbytes(self.STREAM)
        self.produced = bytearray()
        self.calls = 0

    def read(self, n: int) -> bytes:
        self.calls += 1
        start = len(self.produced) % self.STREAM
        data = (self._stream[start:] + self._stream)[:n]
        self.produced += data
        return data


class FailingSource:
    """Raises OSError ``failures`` times, then yields 0xAA bytes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def read(self, n: int) -> bytes:
        if self.failures:
            self.failures -= 1
            raise OSError(5, "entropy source unavailable")
        return b"\xaa" * n


class FakeTimer:
    """A simulated monotonic clock with one pending wake-up (a `TimerPort`)."""

    def __init__(self, start: float = 100.0) -> None:
        self._now = start
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.armed = 0

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        self.cancel()
        self._seq += 1
        self.armed += 1
        heapq.heappush(self._pending, (when, self._seq, callback))

    def cancel(self) -> None:
        self._pending.clear()

    @property
    def deadline(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    def advance(self, dt: float) -> None:
        """Move time forward, firing wake-ups at their own time."""
        target = self._now + dt
        while self._pending and self._pending[0][0] <= target:
            when, _, callback = heapq.heappop(self._pending)
            self._now = max(self._now, when)
            callback()
        self._now = target


@dataclass(eq=False)
class RngRig:
    device: VirtioRngDevice
    driver: VirtioRngDriver
    mem: FlatMemory
    slot: Slot
    bus: InProcessBus
    dma: DmaPool

    def new_driver(self, ring_features: int = DEFAULT_RING_FEATURES) -> VirtioRngDriver:
        """A fresh guest driver on the same device (after ``driver.close()``)."""
        self.driver = VirtioRngDriver(self.slot.transport, self.dma, ring_features=ring_features)
        self.slot.handler = self.driver.interrupt
        return self.driver


def make_rig(
    transport: str,
    ring: str,
    *,
    source: EntropySource | None = None,
    config: RngConfig | None = None,
    timer: TimerPort | None = None,
    buffer_size: int = 4096,
) -> RngRig:
    """A device and its guest driver on a fresh bus; call inside a running loop."""
    mem = FlatMemory(MEM_SIZE)
    device = VirtioRngDevice(source, config, timer)
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
    driver = VirtioRngDriver(
        slot.transport,
        dma,
        ring_features=features,
        buffer_size=buffer_size,
    )
    slot.handler = driver.interrupt
    packed = bool(driver.features >> S.VIRTIO_F_RING_PACKED & 1)
    assert packed == (ring == "packed")
    return RngRig(device, driver, mem, slot, bus, dma)


async def settle(turns: int = 20) -> None:
    """Let the loop run scheduled callbacks and the tasks they wake."""
    for _ in range(turns):
        await asyncio.sleep(0)


@dataclass
class RecordingInterrupt:
    queues: list[int] = field(default_factory=list)
    configs: int = 0

    def trigger_queue(self, index: int) -> None:
        self.queues.append(index)

    def trigger_config(self) -> None:
        self.configs += 1


@dataclass(eq=False)
class RawRig:
    """A device activated on one split ring the test writes by hand."""

    mem: FlatMemory
    ring: SplitRingBuilder
    device: VirtioRngDevice
    irq: RecordingInterrupt
    resets: list[str]

    def post(self, descs: list[tuple[int, int, int]]) -> int:
        head = self.ring.add_chain(descs)
        self.device.queue_notify(0)
        return head

    def used(self) -> list[tuple[int, int]]:
        return [self.ring.used_elem(i) for i in range(self.ring.used_idx())]


def raw_rig(
    source: EntropySource | None = None,
    config: RngConfig | None = None,
    timer: TimerPort | None = None,
    device: VirtioRngDevice | None = None,
) -> RawRig:
    """A fresh ring; ``device`` (default: a new one) is activated on it."""
    mem = FlatMemory(1 << 20)
    if device is None:
        device = VirtioRngDevice(
            source or SeededSource(), config or RngConfig(queue_size=16), timer
        )
    features = device.avail_features & ~(1 << S.VIRTIO_F_RING_PACKED)
    ring = SplitRingBuilder(mem, 16, features=features)
    irq = RecordingInterrupt()
    resets: list[str] = []
    ctx = ActivationContext(mem, [SplitDeviceQueue(ring.config)], irq, features, resets.append)
    device.activate(ctx)
    return RawRig(mem, ring, device, irq, resets)
