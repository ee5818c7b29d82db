"""Helpers for the virtio-blk tests: chains built by hand in guest memory, and a device
activated over a raw split ring (no transport) so tests can play a hostile driver."""

from __future__ import annotations

import asyncio
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.drivers.blk.driver import VirtioBlkDriver
from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_blk as B
from xenvirtio.testing.virtio_builders import SplitRingBuilder
from xenvirtio.transport.api import ActivationContext
from xenvirtio.virtio.queue import DescriptorChain
from xenvirtio.virtio.split import SplitDeviceQueue

T = B.VirtioBlkType
WRITE = S.VIRTQ_DESC_F_WRITE


def header(rtype: int, sector: int = 0, reserved: int = 0) -> bytes:
    return B.VIRTIO_BLK_REQ_HEADER.pack(rtype, reserved, sector)


def segment(sector: int, num: int, flags: int = 0) -> bytes:
    return B.VIRTIO_BLK_DISCARD_WRITE_ZEROES.pack(sector, num, flags)


class ChainMaker:
    """Places buffers one after another in ``mem`` and builds `DescriptorChain`s from
    them, as a device queue would hand them out."""

    def __init__(self, mem: GuestMemory, base: int = 0x1000) -> None:
        self.mem, self.next = mem, base

    def buf(self, data: bytes | int) -> tuple[int, int]:
        """A readable buffer holding ``data``, or a zeroed one of ``data`` bytes."""
        raw = bytes(data) if isinstance(data, int) else data
        addr = (self.next + 15) & ~15
        self.mem.write(addr, raw)
        self.next = addr + len(raw) + 16  # a gap: adjacent buffers are not merged
        return addr, len(raw)

    def chain(self, readable: list[bytes], writable: list[int]) -> DescriptorChain:
        r = tuple(self.buf(d) for d in readable)
        w = tuple(self.buf(n) for n in writable)
        return DescriptorChain(0, r, w, sum(n for _, n in r), sum(n for _, n in w), len(r) + len(w))


@dataclass
class RecordingInterrupt:
    queues: list[int] = field(default_factory=list)
    configs: int = 0

    def trigger_queue(self, index: int) -> None:
        self.queues.append(index)

    def trigger_config(self) -> None:
        self.configs += 1


@dataclass
class RawRig:
    """A device activated on one split ring that the test writes by hand."""

    mem: FlatMemory
    ring: SplitRingBuilder
    device: VirtioBlkDevice
    irq: RecordingInterrupt
    resets: list[str]
    ctx: ActivationContext

    def submit(self, descs: list[tuple[int, int, int]]) -> int:
        head = self.ring.add_chain(descs)
        self.device.queue_notify(0)
        return head

    def status(self, addr: int) -> int:
        return self.mem.read(addr, 1)[0]


def raw_rig(image: Path, config: BlkConfig | None = None, features: int | None = None) -> RawRig:
    mem = FlatMemory(1 << 20)
    device = VirtioBlkDevice(BlockFile(image), config or BlkConfig(queue_size=64))
    if features is None:
        features = device.avail_features & ~(1 << S.VIRTIO_F_RING_PACKED)
    ring = SplitRingBuilder(mem, 64, features=features)
    irq = RecordingInterrupt()
    resets: list[str] = []
    queue = SplitDeviceQueue(ring.config)
    ctx = ActivationContext(mem, [queue], irq, features, resets.append)
    device.activate(ctx)
    return RawRig(mem, ring, device, irq, resets, ctx)


def make_image(path: Path, size: int, pattern: bytes = b"") -> Path:
    with open(path, "wb") as f:
        if pattern:
            f.write((pattern * (size // len(pattern) + 1))[:size])
        else:
            f.truncate(size)
    return path


def pack_u64(value: int) -> bytes:
    return struct.pack("<Q", value)


# ---------------------------------------------------------------- workloads against a model
SECTOR = 512


class Model:
    """What the disk must hold: bytes, plus which sectors are defined (a discarded range
    reads back as anything, 5.2.6.1)."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.known = bytearray(b"\1" * (len(data) // SECTOR))

    def write(self, offset: int, data: bytes) -> None:
        self.data[offset : offset + len(data)] = data
        self.known[offset // SECTOR : (offset + len(data)) // SECTOR] = b"\1" * (
            len(data) // SECTOR
        )

    def forget(self, offset: int, length: int) -> None:
        self.known[offset // SECTOR : (offset + length) // SECTOR] = bytes(length // SECTOR)

    def check(self, offset: int, got: bytes | bytearray) -> None:
        for i in range(0, len(got), SECTOR):
            if self.known[(offset + i) // SECTOR]:
                assert got[i : i + SECTOR] == self.data[offset + i : offset + i + SECTOR], (
                    f"sector {(offset + i) // SECTOR} differs"
                )


def _ranges(rng: random.Random, count: int, size: int) -> list[tuple[int, int]]:
    """``count`` non-overlapping sector-aligned ranges (requests in flight together
    must not overlap: their order is not defined)."""
    out: list[tuple[int, int]] = []
    while len(out) < count:
        length = SECTOR * rng.choice([1, 8, 8, 16, 64, 256])
        offset = SECTOR * rng.randrange(0, (size - length) // SECTOR)
        if all(offset + length <= o or o + n <= offset for o, n in out):
            out.append((offset, length))
    return out


async def _op(drv: VirtioBlkDriver, model: Model, rng: random.Random, off: int, n: int) -> None:
    kind = rng.choices(["read", "write", "trim", "zero"], [5, 5, 1, 1])[0]
    if kind == "read":
        model.check(off, await drv.read(off, n))
    elif kind == "write":
        data = rng.randbytes(n)
        await drv.write(off, data, rng.random() < 0.1)
        model.write(off, data)
    elif kind == "trim":
        await drv.trim(off, n)
        model.forget(off, n)
    else:
        await drv.write_zeroes(off, n, rng.random() < 0.5)
        model.write(off, bytes(n))


async def workload(drv: VirtioBlkDriver, model: Model, seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    size = len(model.data)
    for _ in range(rounds):
        ranges = _ranges(rng, rng.randint(1, 24), size)
        await asyncio.gather(*(_op(drv, model, rng, off, n) for off, n in ranges))
        if rng.random() < 0.2:
            await drv.flush()
    await drv.flush()
    model.check(0, await drv.read(0, size))
