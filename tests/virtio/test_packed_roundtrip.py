"""PackedDriverQueue against PackedDeviceQueue over contiguous and 1-byte-fragmented guest
memory: buffers go round many laps of the ring with their data and written lengths
intact, lists, indirect tables, IN_ORDER batches, resets and the driver's own errors."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.layout import IndirectPool, ring_addrs
from xenvirtio.virtio.packed import PackedDeviceQueue, PackedDriverQueue
from xenvirtio.virtio.queue import (
    DescriptorChain,
    QueueConfig,
    QueueFullError,
    RingFormat,
    make_device_queue,
    make_driver_queue,
)

BASE = 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_F_RING_PACKED
INDIRECT = 1 << S.VIRTIO_RING_F_INDIRECT_DESC
IN_ORDER = 1 << S.VIRTIO_F_IN_ORDER
EVENT_IDX = 1 << S.VIRTIO_RING_F_EVENT_IDX
MEM_SIZE = 0x10000
POOL = 0x1000
DATA = 0x4000
SLOT = 256  # bytes of buffer memory per buffer id

MEMORIES: dict[str, Callable[[], GuestMemory]] = {
    "flat": lambda: FlatMemory(MEM_SIZE),
    "fragmented": lambda: FragmentedMemory(MEM_SIZE, fragment=1),
}


@dataclass
class Pair:
    mem: GuestMemory
    drv: PackedDriverQueue[int]
    dev: PackedDeviceQueue
    pool: IndirectPool


def make_pair(mem: GuestMemory, size: int, features: int) -> Pair:
    addrs = ring_addrs(True, 0, size)
    cfg = QueueConfig(size, addrs.desc, addrs.driver, addrs.device, BASE | features, index=3)
    pool = IndirectPool(POOL, 4, 8)
    drv: PackedDriverQueue[int] = PackedDriverQueue(cfg, pool)
    drv.init_rings(mem)
    return Pair(mem, drv, PackedDeviceQueue(cfg), pool)


def pattern(token: int, n: int) -> bytes:
    return bytes((token * 7 + i) & 0xFF for i in range(n))


def add_buffer(p: Pair, token: int, rng: random.Random) -> tuple[int, int]:
    """Add a buffer of 1-3 readable and 0-2 writable pieces; returns (readable, writable)."""
    base = DATA + SLOT * (token % 40)
    nr, nw = rng.randint(1, 3), rng.randint(0, 2)
    readable = [(base + 16 * i, 16) for i in range(nr)]
    writable = [(base + 128 + 24 * i, 24) for i in range(nw)]
    p.mem.write(base, pattern(token, 16 * nr))
    p.drv.add(p.mem, readable, writable, token)
    return 16 * nr, 24 * nw


def serve(p: Pair, chain: DescriptorChain, written: int) -> None:
    """The device side of one buffer: check its data, write a pattern back."""
    data = chain.reader(p.mem).read()
    token = data[0] * pow(7, -1, 256) % 256  # data[0] == token * 7 (mod 256)
    assert data == pattern(token, len(data))
    chain.writer(p.mem).write(pattern(token + 1, written))


@pytest.mark.parametrize("memory", sorted(MEMORIES))
@pytest.mark.parametrize("features", [0, INDIRECT, IN_ORDER, INDIRECT | IN_ORDER | EVENT_IDX])
@pytest.mark.parametrize("size", [5, 8])
def test_many_laps(memory: str, features: int, size: int) -> None:
    rng = random.Random(f"{memory}{features}{size}")
    p = make_pair(MEMORIES[memory](), size, features)
    expect: dict[int, tuple[int, int]] = {}
    token = returned = 0
    for _ in range(60):
        while True:  # fill the ring
            try:
                expect[token % 256] = add_buffer(p, token % 256, rng)
            except QueueFullError:
                break
            token += 1
        p.drv.kick_prepare(p.mem)
        chains = p.dev.pop_batch(p.mem, rng.randint(1, size))
        if not features & IN_ORDER:
            rng.shuffle(chains)
        items = []
        for chain in chains:
            written = rng.randint(0, chain.writable_len)
            serve(p, chain, written)
            items.append((chain, written))
        p.dev.push_used_batch(p.mem, items)
        for tok, length in p.drv.get_used_batch(p.mem, size):
            _, wlen = expect.pop(tok)
            assert length <= wlen
            assert p.mem.read(DATA + SLOT * (tok % 40) + 128, length) == pattern(tok + 1, length)
            returned += 1
    assert returned > 60
    p.drv.kick_prepare(p.mem)
    rest = p.dev.pop_batch(p.mem, size)
    p.dev.push_used_batch(p.mem, [(c, 0) for c in rest])
    assert sorted(t for t, _ in p.drv.get_used_batch(p.mem, size)) == sorted(expect)
    assert p.drv.num_free == size and p.drv.get_used(p.mem) is None


def test_written_lengths_come_back_exactly() -> None:
    p = make_pair(FlatMemory(MEM_SIZE), 8, 0)
    for token in range(8):
        p.drv.add(p.mem, [], [(DATA + SLOT * token, 100)], token)
    chains = p.dev.pop_batch(p.mem, 8)  # in avail order: chains[i] carries token i
    p.dev.push_used_batch(p.mem, [(chains[t], 10 * t) for t in reversed(range(8))])
    assert p.drv.get_used_batch(p.mem, 8) == [(t, 10 * t) for t in reversed(range(8))]
    assert p.drv.num_free == 8 and p.drv.get_used(p.mem) is None


def test_chain_occupies_descriptors_and_frees_them() -> None:
    p = make_pair(FragmentedMemory(MEM_SIZE, fragment=1), 5, 0)
    p.drv.add(p.mem, [(DATA, 8), (DATA + 8, 8)], [(DATA + 64, 8)], 1)
    assert p.drv.num_free == 2
    with pytest.raises(QueueFullError):
        p.drv.add(p.mem, [(DATA, 8)] * 3, [], 2)
    assert p.drv.num_free == 2  # nothing was written for the refused buffer
    chain = p.dev.pop(p.mem)
    assert chain is not None and chain.desc_count == 3 and p.dev.pop(p.mem) is None
    p.dev.push_used(p.mem, chain, 8)
    assert p.drv.get_used(p.mem) == (1, 8)
    assert p.drv.num_free == 5


def test_indirect_tables_save_ring_slots_and_fall_back_when_exhausted() -> None:
    p = make_pair(FlatMemory(MEM_SIZE), 16, INDIRECT)
    for token in range(8):  # the pool has 8 tables of 4 descriptors
        p.drv.add(p.mem, [(DATA + SLOT * token, 8)] * 2, [(DATA + SLOT * token + 128, 8)], token)
    assert p.drv.num_free == 8
    p.drv.add(p.mem, [(DATA, 8)] * 2, [], 8)  # no table left: a 2-descriptor list
    assert p.drv.num_free == 6
    p.drv.add(p.mem, [(DATA, 8)] * 5, [], 9)  # more elements than a table holds
    assert p.drv.num_free == 1
    chains = p.dev.pop_batch(p.mem, 16)
    assert [c.desc_count for c in chains] == [1] * 8 + [2, 5]
    assert all(len(c.readable) == 2 and len(c.writable) == 1 for c in chains[:8])
    p.dev.push_used_batch(p.mem, [(c, 0) for c in chains])
    assert sorted(t for t, _ in p.drv.get_used_batch(p.mem, 16)) == list(range(10))
    assert p.drv.num_free == 16 and p.pool.alloc() is not None


@pytest.mark.parametrize("memory", sorted(MEMORIES))
def test_in_order_batch_writes_one_used_descriptor(memory: str) -> None:
    p = make_pair(MEMORIES[memory](), 8, IN_ORDER)
    for token in range(4):
        p.drv.add(p.mem, [], [(DATA + SLOT * token, 32)], token)
    chains = p.dev.pop_batch(p.mem, 8)
    # Buffers 0 and 1 written in full, 2 partly, 3 in full: used descriptors go to the
    # first slot of each batch (0 and 3), naming the last buffer of the batch.
    p.dev.push_used_batch(p.mem, [(chains[0], 32), (chains[1], 32), (chains[2], 5)])
    p.dev.push_used_batch(p.mem, [(chains[3], 32)])
    raw = [p.mem.read(16 * i + 8, 8) for i in range(4)]
    flags = [int.from_bytes(r[6:8], "little") for r in raw]
    used = S.VIRTQ_PACKED_DESC_F_AVAIL | S.VIRTQ_PACKED_DESC_F_USED
    assert [f & used == used for f in flags] == [True, False, False, True]
    assert int.from_bytes(raw[0][4:6], "little") == chains[2].head
    assert p.drv.get_used_batch(p.mem, 8) == [(0, 32), (1, 32), (2, 5), (3, 32)]
    assert p.drv.num_free == 8


def test_device_use_errors_are_programming_errors() -> None:
    p = make_pair(FlatMemory(MEM_SIZE), 8, IN_ORDER)
    p.drv.add(p.mem, [], [(DATA, 8)], 0)
    p.drv.add(p.mem, [], [(DATA + 64, 8)], 1)
    first, second = p.dev.pop_batch(p.mem, 2)
    with pytest.raises(ValueError):
        p.dev.push_used(p.mem, first, 9)  # more than the buffer holds
    with pytest.raises(ValueError):
        p.dev.push_used(p.mem, second, 0)  # IN_ORDER: out of order
    p.dev.push_used(p.mem, first, 8)
    with pytest.raises(ValueError):
        p.dev.push_used(p.mem, first, 8)  # twice


def test_driver_input_errors() -> None:
    p = make_pair(FlatMemory(MEM_SIZE), 4, 0)
    with pytest.raises(ValueError):
        p.drv.add(p.mem, [], [], 0)
    with pytest.raises(ValueError):
        p.drv.add(p.mem, [(DATA, 1)] * 5, [], 0)  # more elements than Queue Size
    with pytest.raises(ValueError):
        p.drv.add(p.mem, [(DATA, 1 << 32)], [], 0)
    with pytest.raises(ValueError):
        p.drv.add(p.mem, [(-1, 8)], [], 0)
    assert p.drv.num_free == 4


def test_notification_data_carries_next_offset_and_wrap() -> None:
    p = make_pair(FlatMemory(MEM_SIZE), 4, 0)
    assert p.drv.notification_data() == 3 | (1 << 15) << 16
    p.drv.add(p.mem, [(DATA, 8)] * 3, [], 0)
    assert p.drv.notification_data() == 3 | (3 | 1 << 15) << 16
    chain = p.dev.pop(p.mem)
    assert chain is not None
    p.dev.push_used(p.mem, chain, 0)
    assert p.drv.get_used(p.mem) == (0, 0)
    p.drv.add(p.mem, [(DATA, 8)] * 2, [], 1)  # wraps: offset 1, wrap counter 0
    assert p.drv.notification_data() == 3 | 1 << 16
    assert p.dev.pop(p.mem) is not None and p.dev.next_avail == 1


def test_reset_returns_outstanding_tokens_and_starts_over() -> None:
    p = make_pair(FlatMemory(MEM_SIZE), 4, INDIRECT | IN_ORDER)
    for token in range(3):
        p.drv.add(p.mem, [(DATA, 8)] * 2, [], token)
    chains = p.dev.pop_batch(p.mem, 4)
    p.dev.push_used(p.mem, chains[0], 0)
    assert p.drv.get_used(p.mem) == (0, 0)
    assert sorted(p.drv.detach_unused()) == [1, 2]
    p.dev.reset()
    p.drv.init_rings(p.mem)
    assert p.drv.num_free == 4 and p.pool.alloc() is not None
    p.pool.reset()
    p.drv.add(p.mem, [(DATA, 8)], [], 7)
    chain = p.dev.pop(p.mem)
    assert chain is not None and p.dev.pop(p.mem) is None
    p.dev.push_used(p.mem, chain, 0)
    assert p.drv.get_used(p.mem) == (7, 0)


def test_factories_build_packed_queues() -> None:
    addrs = ring_addrs(True, 0, 8)
    cfg = QueueConfig(8, addrs.desc, addrs.driver, addrs.device, BASE)
    assert cfg.ring_format is RingFormat.PACKED
    assert isinstance(make_device_queue(RingFormat.PACKED, cfg), PackedDeviceQueue)
    assert isinstance(make_driver_queue(RingFormat.PACKED, cfg), PackedDriverQueue)


def test_in_order_batch_out_of_order_changes_nothing() -> None:
    p = make_pair(FlatMemory(MEM_SIZE), 8, IN_ORDER)
    for token in range(3):
        p.drv.add(p.mem, [], [(DATA + SLOT * token, 8)], token)
    chains = p.dev.pop_batch(p.mem, 3)
    with pytest.raises(ValueError):
        p.dev.push_used_batch(p.mem, [(chains[0], 8), (chains[2], 8)])
    p.dev.push_used_batch(p.mem, [(c, 8) for c in chains])  # the queue is still whole
    assert p.drv.get_used_batch(p.mem, 8) == [(0, 8), (1, 8), (2, 8)]
