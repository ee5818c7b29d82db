"""Driver and device in two processes, as a guest and its backend would be: one memfd
mapped by both (guest RAM), one eventfd for kicks and one for interrupts. Both ring
formats, several feature sets: thousands of buffers go through, every one comes back
once with the device's checksum of what the driver wrote, and nothing hangs (every wait
has a timeout; the fixture kills and reaps the device process whatever happens)."""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import select
import signal
import struct
import time
import traceback
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.queue import (
    DeviceQueue,
    DriverQueue,
    IndirectPool,
    QueueConfig,
    QueueFullError,
    RingFormat,
    make_device_queue,
    make_driver_queue,
    ring_addrs,
)

MEM_SIZE = 1 << 20
QUEUE_SIZE = 64
POOL = 0x4000
DATA = 0x10000
SLOT = 4096  # per buffer id: payload, then the reply header, then the echo
MAX_PAYLOAD = 1500
BUFFERS = 1500
WAIT = 10.0  # seconds any side waits for the other before giving up
HEADER = struct.Struct("<II")  # crc32 of what the device read, bytes read


@dataclass
class Shared:
    mm: mmap.mmap
    fds: list[int]
    kick: int
    irq: int
    children: list[int] = field(default_factory=list)


@pytest.fixture
def shared() -> Iterator[Shared]:
    memfd = os.memfd_create("xenvirtio-guest-ram", os.MFD_CLOEXEC)
    os.ftruncate(memfd, MEM_SIZE)
    mm = mmap.mmap(memfd, MEM_SIZE)
    kick = os.eventfd(0, os.EFD_CLOEXEC)
    irq = os.eventfd(0, os.EFD_CLOEXEC)
    sh = Shared(mm, [memfd, kick, irq], kick, irq)
    try:
        yield sh
    finally:
        for pid in sh.children:  # not reaped by the test: it failed; stop the device
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in sh.fds:
            os.close(fd)
        with contextlib.suppress(BufferError):  # views still alive: unmapped when collected
            mm.close()


def _reaped(sh: Shared, pid: int, timeout: float) -> int | None:
    """The exit status of ``pid`` if it exits within ``timeout`` (then it is reaped)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            sh.children.remove(pid)
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _wait(fd: int) -> bool:
    """Wait for an eventfd to fire and consume it; False on timeout."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(WAIT * 1000):
        return False
    os.eventfd_read(fd)
    return True


# -- the device process ------------------------------------------------------------------------


def _serve(dev: DeviceQueue, mem: FlatMemory, sh: Shared, count: int) -> int:
    """Answer ``count`` buffers: header (crc32, length) then the payload reversed."""
    served = 0
    while served < count:
        chains = dev.pop_batch(mem, 32)
        if not chains:
            if dev.enable_notification(mem):
                continue  # buffers arrived meanwhile (virtio 1.2 2.7.10 race)
            if not _wait(sh.kick):
                return 3
            dev.disable_notification(mem)
            continue
        items = []
        for chain in chains:
            data = chain.reader(mem).read()
            writer = chain.writer(mem)
            writer.write(HEADER.pack(zlib.crc32(data), len(data)))
            writer.write(data[::-1])
            items.append((chain, HEADER.size + len(data)))
        dev.push_used_batch(mem, items)
        served += len(items)
        if dev.needs_notify(mem):
            os.eventfd_write(sh.irq, 1)
    return 0


def _start_device(sh: Shared, fmt: RingFormat, cfg: QueueConfig, count: int) -> int:
    pid = os.fork()
    if pid:
        sh.children.append(pid)
        return pid
    code = 1
    try:  # the child: never return into pytest
        code = _serve(make_device_queue(fmt, cfg), FlatMemory(buffer=sh.mm), sh, count)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


# -- the driver (this process) --------------------------------------------------------------


@dataclass
class Sent:
    payload: bytes
    base: int


@dataclass
class DriverSide:
    """The driver's bookkeeping: what each outstanding token carries, free buffer slots."""

    drv: DriverQueue[int]
    mem: FlatMemory
    rng: random.Random
    sent: dict[int, Sent] = field(default_factory=dict)
    free: list[int] = field(default_factory=lambda: list(range(QUEUE_SIZE)))
    next_token: int = 0
    returned: int = 0

    def add_some(self) -> None:
        """Fill the queue with new buffers (1-2 readable pieces, header + echo writable)."""
        while self.free and self.next_token < BUFFERS:
            base = DATA + SLOT * self.free[-1]
            payload = self.rng.randbytes(self.rng.randint(1, MAX_PAYLOAD))
            self.mem.write(base, payload)
            cut = self.rng.randint(0, len(payload) - 1)
            pieces = (
                [(base, cut), (base + cut, len(payload) - cut)] if cut else [(base, len(payload))]
            )
            reply = [(base + 2048, HEADER.size), (base + 2048 + HEADER.size, MAX_PAYLOAD)]
            try:
                self.drv.add(self.mem, pieces, reply, self.next_token)
            except QueueFullError:
                return
            self.free.pop()
            self.sent[self.next_token] = Sent(payload, base)
            self.next_token += 1

    def collect(self) -> bool:
        got = self.drv.get_used_batch(self.mem, 64)
        for token, length in got:
            item = self.sent.pop(token)
            _check_reply(self.mem, item, length)
            self.free.append((item.base - DATA) // SLOT)
            self.returned += 1
        return bool(got)


def _check_reply(mem: FlatMemory, sent: Sent, length: int) -> None:
    assert length == HEADER.size + len(sent.payload)
    crc, n = HEADER.unpack(mem.read(sent.base + 2048, HEADER.size))
    assert (crc, n) == (zlib.crc32(sent.payload), len(sent.payload))
    assert mem.read(sent.base + 2048 + HEADER.size, n) == sent.payload[::-1]


FEATURE_SETS = {
    "plain": 0,
    "indirect+event_idx": 1 << S.VIRTIO_RING_F_INDIRECT_DESC | 1 << S.VIRTIO_RING_F_EVENT_IDX,
    "in_order+event_idx": 1 << S.VIRTIO_F_IN_ORDER | 1 << S.VIRTIO_RING_F_EVENT_IDX,
}


@pytest.mark.parametrize("features", sorted(FEATURE_SETS))
@pytest.mark.parametrize("fmt", list(RingFormat), ids=lambda f: f.value)
def test_buffers_cross_processes(shared: Shared, fmt: RingFormat, features: str) -> None:
    packed = fmt is RingFormat.PACKED
    bits = 1 << S.VIRTIO_F_VERSION_1 | FEATURE_SETS[features]
    bits |= (1 << S.VIRTIO_F_RING_PACKED) if packed else 0
    addrs = ring_addrs(packed, 0, QUEUE_SIZE)
    cfg = QueueConfig(QUEUE_SIZE, addrs.desc, addrs.driver, addrs.device, bits)
    mem = FlatMemory(buffer=shared.mm)
    drv = make_driver_queue(fmt, cfg, IndirectPool(POOL, 4, QUEUE_SIZE))
    drv.init_rings(mem)
    pid = _start_device(shared, fmt, cfg, BUFFERS)
    side = DriverSide(drv, mem, random.Random(f"{fmt}{features}"))
    while side.returned < BUFFERS:
        side.add_some()
        if drv.kick_prepare(mem):
            os.eventfd_write(shared.kick, 1)
        if side.collect() or drv.enable_cb(mem):
            continue
        assert _wait(shared.irq), f"no interrupt after {side.returned} buffers: device hung?"
        drv.disable_cb(mem)
    assert not side.sent and drv.num_free == QUEUE_SIZE
    assert _reaped(shared, pid, WAIT) == 0, "device process did not finish cleanly"
    drv.detach_unused()
