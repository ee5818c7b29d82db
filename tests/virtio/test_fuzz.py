"""Fuzz the device side of both ring formats with arbitrary guest memory.

Hypothesis writes raw bytes over the ring areas (descriptors, avail/used rings, event
suppression) and over the shared buffer memory, mixes in descriptors aimed at interesting
addresses (shared, mapped but not shared, unmapped, near 2**64), starts the device at a
random position and runs it: pops, uses what it popped (reading and writing the buffers
through the chain streams), decides notifications, toggles them, while the "driver" keeps
scribbling over the ring. Whatever the bytes, only `VirtqueueError` may escape, and the
GuardedMemory proves nothing outside the shared ranges was ever touched.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.mem.guard import GuardedMemory
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.queue import (
    DescriptorChain,
    DeviceQueue,
    IndirectPool,
    QueueConfig,
    QueueFullError,
    RingFormat,
    VirtqueueError,
    make_device_queue,
    make_driver_queue,
    ring_addrs,
)

MEM_SIZE = 0x3000
SHARED = (0x1000, 0x1000)  # buffer memory the guest shares with the device
UNSHARED = 0x2000  # mapped, but never shared: the guard forbids it
BUFFERS = 0x1000  # where the well-behaved driver puts its buffers (0x800 bytes)...
POOL = 0x1800  # ...and its indirect tables
ALL_FEATURES = (
    1 << S.VIRTIO_F_VERSION_1
    | 1 << S.VIRTIO_RING_F_INDIRECT_DESC
    | 1 << S.VIRTIO_RING_F_EVENT_IDX
    | 1 << S.VIRTIO_F_IN_ORDER
)

MEMORIES: dict[str, Callable[[], GuestMemory]] = {
    "flat": lambda: FlatMemory(MEM_SIZE),
    "fragmented": lambda: FragmentedMemory(MEM_SIZE, fragment=1),
}

addresses = st.one_of(
    st.integers(SHARED[0], SHARED[0] + SHARED[1]),
    st.integers(UNSHARED, MEM_SIZE + 64),
    st.integers((1 << 64) - 64, (1 << 64) - 1),
    st.integers(0, (1 << 64) - 1),
)
# Raw flags, or NEXT/WRITE/INDIRECT with one of the four AVAIL/USED combinations.
flags = st.integers(0, 0xFFFF) | st.builds(
    lambda kind, wrap: sum(kind) | wrap,
    st.sets(st.sampled_from([S.VIRTQ_DESC_F_NEXT, S.VIRTQ_DESC_F_WRITE, S.VIRTQ_DESC_F_INDIRECT])),
    st.sampled_from([0, 0x80, 0x8000, 0x8080]),
)
descriptors = st.tuples(addresses, st.integers(0, 0x1100) | st.integers(0, 0xFFFFFFFF), flags)


def _ring_ranges(cfg: QueueConfig, packed: bool) -> list[tuple[int, int]]:
    size = cfg.size
    if packed:
        return [(cfg.desc_addr, 16 * size), (cfg.driver_addr, 4), (cfg.device_addr, 4)]
    return [
        (cfg.desc_addr, 16 * size),
        (cfg.driver_addr, 6 + 2 * size),
        (cfg.device_addr, 6 + 8 * size),
    ]


def _scribble(
    data: st.DataObject, mem: GuestMemory, ranges: list[tuple[int, int]], packed: bool
) -> None:
    """The driver writes arbitrary bytes somewhere shared, or a descriptor aimed at an
    interesting address into the descriptor table or a would-be indirect table."""
    if data.draw(st.booleans()):
        gpa, size = data.draw(st.sampled_from(ranges))
        off = data.draw(st.integers(0, size - 1))
        mem.write(gpa + off, data.draw(st.binary(min_size=1, max_size=size - off)))
        return
    gpa, size = data.draw(st.sampled_from([ranges[0], ranges[-1]]))  # descriptors, shared
    off = 16 * data.draw(st.integers(0, size // 16 - 1))
    addr, length, fl = data.draw(descriptors)
    other = data.draw(st.integers(0, 0xFFFF) | st.integers(0, 8))  # packed id / split next
    fields = (addr, length, other, fl) if packed else (addr, length, fl, other)
    mem.write(gpa + off, S.PVIRTQ_DESC.pack(*fields))


def _use(dev: DeviceQueue, mem: GuestMemory, chains: list[DescriptorChain], n: int) -> None:
    """Read and write the oldest ``n`` held chains through their streams, then use them."""
    items = []
    for chain in chains[:n]:
        chain.reader(mem).read()
        writer = chain.writer(mem)
        writer.write(bytes(min(writer.remaining, 64)))
        items.append((chain, writer.bytes_written))
    del chains[:n]
    dev.push_used_batch(mem, items)


def _step(
    data: st.DataObject, dev: DeviceQueue, guard: GuardedMemory, held: list[DescriptorChain]
) -> None:
    op = data.draw(st.sampled_from(["pop", "use", "notify", "enable", "disable"]))
    if op == "pop":
        chains = dev.pop_batch(guard, data.draw(st.integers(1, 8)))
        event(f"popped {min(len(chains), 2)}+ chains" if chains else "popped nothing")
        held.extend(chains)
    elif op == "use" and held:
        _use(dev, guard, held, data.draw(st.integers(1, len(held))))
    elif op == "notify":
        dev.needs_notify(guard)
    elif op == "enable":
        dev.enable_notification(guard)
    elif op == "disable":
        dev.disable_notification(guard)


def _driver_fills(data: st.DataObject, fmt: RingFormat, cfg: QueueConfig, mem: GuestMemory) -> None:
    """A well-behaved driver lays out buffers (in shared memory) for the fuzzer to damage."""
    drv = make_driver_queue(fmt, cfg, IndirectPool(POOL, 4, 8))
    drv.init_rings(mem)
    # Mostly sane buffers; some aimed elsewhere (the driver is the hostile party).
    aim = st.integers(BUFFERS, BUFFERS + 0x700) | st.integers(BUFFERS, BUFFERS + 0x700) | addresses
    segment = st.tuples(aim, st.integers(0, 0x100))
    for _ in range(data.draw(st.integers(1, 2 * cfg.size))):
        readable = data.draw(st.lists(segment, max_size=3))
        writable = data.draw(st.lists(segment, max_size=3, min_size=0 if readable else 1))
        try:
            drv.add(mem, readable, writable, None)
        except (QueueFullError, ValueError):
            break
    drv.kick_prepare(mem)


@pytest.mark.parametrize("memory", sorted(MEMORIES))
@pytest.mark.parametrize("fmt", list(RingFormat), ids=lambda f: f.value)
@settings(max_examples=300)
@given(data=st.data())
def test_device_survives_arbitrary_memory(
    data: st.DataObject, fmt: RingFormat, memory: str
) -> None:
    packed = fmt is RingFormat.PACKED
    size = data.draw(st.sampled_from([1, 2, 4, 8] + ([3, 5] if packed else [])))
    features = ALL_FEATURES & data.draw(st.integers(0, (1 << 64) - 1))
    features |= (1 << S.VIRTIO_F_RING_PACKED) if packed else 0
    addrs = ring_addrs(packed, 0, size)
    cfg = QueueConfig(size, addrs.desc, addrs.driver, addrs.device, features)
    mem = MEMORIES[memory]()
    ranges = [*_ring_ranges(cfg, packed), SHARED]
    dev = make_device_queue(fmt, cfg)
    if data.draw(st.booleans()):  # raw bytes everywhere, the device at a random position
        mem.write(0, data.draw(st.binary(min_size=addrs.end, max_size=addrs.end)))
        mem.write(SHARED[0], data.draw(st.binary(max_size=512)))
        start = data.draw(st.integers(0, 0xFFFF))
        dev.next_avail = dev.next_used = (start % size) | (start & 0x8000) if packed else start
    else:  # a real driver's ring, then damaged below
        _driver_fills(data, fmt, cfg, mem)
    guard = GuardedMemory(mem, ranges)
    held: list[DescriptorChain] = []
    for _ in range(data.draw(st.integers(1, 12))):
        if data.draw(st.integers(0, 3)) == 0:
            _scribble(data, mem, ranges, packed)
        try:
            _step(data, dev, guard, held)
        except VirtqueueError as err:
            event(type(err).__name__)
            dev.reset()  # the device sets DEVICE_NEEDS_RESET; the driver resets it
            held.clear()
    guard.assert_clean()
    for chain in held:  # every buffer handed out lies in memory the guest shared
        for addr, length in chain.readable + chain.writable:
            assert length == 0 or any(g <= addr and addr + length <= g + n for g, n in ranges)
