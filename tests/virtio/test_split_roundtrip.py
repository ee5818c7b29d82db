"""Driver against device over one split ring, in one process: every buffer the driver
adds comes back once, by its token, with the device's written length, and the bytes each
side put in are the bytes the other side sees. Over contiguous memory, 1-byte fragments
and Xen grant-DMA addresses, with random feature sets."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.mem.grant_dma import XEN_PAGE_SIZE, GrantDmaMemory, grant_dma_addr
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.queue import (
    DescriptorChain,
    IndirectPool,
    QueueConfig,
    QueueFullError,
    RingFormat,
    make_device_queue,
    make_driver_queue,
    ring_addrs,
)
from xenvirtio.virtio.split import SplitDeviceQueue, SplitDriverQueue

V1 = 1 << S.VIRTIO_F_VERSION_1
OPTIONAL = [S.VIRTIO_RING_F_EVENT_IDX, S.VIRTIO_RING_F_INDIRECT_DESC, S.VIRTIO_F_IN_ORDER]
PAGES = 16
SLOT = 512  # bytes of buffer memory per outstanding request
SLOTS = 16


def _grant_memory() -> tuple[GuestMemory, int]:
    backing = bytearray(PAGES * XEN_PAGE_SIZE)
    pages = [memoryview(backing)[i * XEN_PAGE_SIZE : (i + 1) * XEN_PAGE_SIZE] for i in range(PAGES)]
    return GrantDmaMemory(lambda gref: pages[gref] if gref < PAGES else None), grant_dma_addr(0)


MEMORIES: dict[str, Callable[[], tuple[GuestMemory, int]]] = {
    "flat": lambda: (FlatMemory(PAGES * XEN_PAGE_SIZE), 0),
    "fragmented": lambda: (FragmentedMemory(PAGES * XEN_PAGE_SIZE, fragment=1), 0),
    "grant-dma": _grant_memory,
}


@dataclass
class Pair:
    mem: GuestMemory
    drv: SplitDriverQueue[int]
    dev: SplitDeviceQueue
    data: int
    free_slots: list[int] = field(default_factory=lambda: list(range(SLOTS)))


def make_pair(kind: str, features: int, size: int = 8) -> Pair:
    mem, base = MEMORIES[kind]()
    addrs = ring_addrs(False, base, size)
    cfg = QueueConfig(size, addrs.desc, addrs.driver, addrs.device, features)
    pool = IndirectPool(base + 0x1000, 8, size)
    drv = make_driver_queue(RingFormat.SPLIT, cfg, pool)
    dev = make_device_queue(RingFormat.SPLIT, cfg)
    assert isinstance(drv, SplitDriverQueue) and isinstance(dev, SplitDeviceQueue)
    drv.init_rings(mem)
    return Pair(mem, drv, dev, base + 0x2000)


request = st.tuples(
    st.lists(st.integers(1, 64), max_size=3),  # readable element lengths
    st.lists(st.integers(1, 64), max_size=3),  # writable element lengths
).filter(lambda rw: bool(rw[0] or rw[1]))


def _device_serve(
    pair: Pair, chain: DescriptorChain, sent: dict[int, bytes], rng: random.Random
) -> int:
    """Check the readable bytes, fill part of the writable ones; return bytes written."""
    reader = chain.reader(pair.mem)
    zero_copy = rng.random() < 0.5
    got = b"".join(bytes(v) for v in reader.views()) if zero_copy else reader.read()
    assert got == sent[chain.head]
    written = rng.randint(0, chain.writable_len)
    pattern = _pattern(chain.writable[0][0] if chain.writable else 0, written)
    writer = chain.writer(pair.mem)
    if rng.random() < 0.5:
        pos = 0
        for view in writer.views(written):
            view[:] = pattern[pos : pos + len(view)]
            pos += len(view)
    else:
        writer.write(pattern)
    return written


def run_workload(pair: Pair, requests: list[tuple[list[int], list[int]]], seed: int) -> None:
    rng = random.Random(seed)
    in_order = pair.drv.config.in_order
    pending = list(enumerate(requests))
    expect: dict[int, tuple[bytes, list[tuple[int, int]], int]] = {}
    sent_by_head: dict[int, bytes] = {}
    done: set[int] = set()
    while len(done) < len(requests):
        while pending and pair.free_slots:  # driver: add until the ring is full
            token, (rlens, wlens) = pending[0]
            slot = pair.free_slots.pop()
            at = pair.data + slot * SLOT
            readable, writable, payload = [], [], b""
            for n in rlens:
                chunk = rng.randbytes(n)
                pair.mem.write(at, chunk)
                readable.append((at, n))
                payload += chunk
                at += n
            for n in wlens:
                writable.append((at, n))
                at += n
            try:
                pair.drv.add(pair.mem, readable, writable, token)
            except QueueFullError:
                pair.free_slots.append(slot)
                break
            pending.pop(0)
            expect[token] = (payload, writable, slot)
        pair.drv.kick_prepare(pair.mem)
        chains = pair.dev.pop_batch(pair.mem, rng.randint(1, 8))
        for chain in chains:  # the device sees what the driver sent, by head
            sent_by_head[chain.head] = _payload_of(pair, chain)
        results = [(c, _device_serve(pair, c, sent_by_head, rng)) for c in chains]
        if not in_order:
            rng.shuffle(results)
        pair.dev.push_used_batch(pair.mem, results)
        pair.dev.needs_notify(pair.mem)
        for token, written in pair.drv.get_used_batch(pair.mem, 64):
            assert token not in done
            payload, writable, slot = expect.pop(token)
            total = sum(n for _, n in writable)
            assert 0 <= written <= total
            back = b"".join(pair.mem.read(a, n) for a, n in writable)[:written]
            assert back == _pattern(writable[0][0] if writable else 0, written)
            done.add(token)
            pair.free_slots.append(slot)
    assert pair.drv.num_free == pair.drv.config.size
    assert pair.drv.detach_unused() == []


def _pattern(addr: int, n: int) -> bytes:
    """What the device writes: derived from where, so the driver can predict it."""
    return bytes((addr + 7 * i) & 0xFF for i in range(n))


def _payload_of(pair: Pair, chain: DescriptorChain) -> bytes:
    return b"".join(pair.mem.read(a, n) for a, n in chain.readable)


@pytest.mark.parametrize("kind", sorted(MEMORIES))
@settings(max_examples=40)
@given(
    optional=st.sets(st.sampled_from(OPTIONAL)),
    requests=st.lists(request, min_size=1, max_size=40),
    seed=st.integers(0, 2**32),
)
def test_round_trip(
    kind: str, optional: set[int], requests: list[tuple[list[int], list[int]]], seed: int
) -> None:
    features = V1 | sum(1 << b for b in optional)
    run_workload(make_pair(kind, features), requests, seed)


def test_written_bytes_reach_the_driver() -> None:
    pair = make_pair("fragmented", V1)
    pair.drv.add(pair.mem, [(pair.data, 4)], [(pair.data + 100, 3), (pair.data + 200, 5)], 7)
    pair.mem.write(pair.data, b"ping")
    chain = pair.dev.pop(pair.mem)
    assert chain is not None and chain.reader(pair.mem).read() == b"ping"
    chain.writer(pair.mem).write(b"pongpong")
    pair.dev.push_used(pair.mem, chain, 8)
    assert pair.drv.get_used(pair.mem) == (7, 8)
    assert pair.mem.read(pair.data + 100, 3) + pair.mem.read(pair.data + 200, 5) == b"pongpong"


def test_indirect_used_when_negotiated() -> None:
    pair = make_pair("flat", V1 | 1 << S.VIRTIO_RING_F_INDIRECT_DESC)
    pair.drv.add(pair.mem, [(pair.data, 4), (pair.data + 4, 4)], [(pair.data + 8, 4)], 1)
    assert pair.drv.num_free == 7  # three elements, one ring descriptor
    chain = pair.dev.pop(pair.mem)
    assert chain is not None and chain.desc_count == 1
    assert chain.readable == ((pair.data, 4), (pair.data + 4, 4))
    pair.dev.push_used(pair.mem, chain, 4)
    assert pair.drv.get_used(pair.mem) == (1, 4)
    assert pair.drv.num_free == 8


def test_queue_full_then_drains() -> None:
    pair = make_pair("flat", V1)
    for i in range(4):
        pair.drv.add(pair.mem, [(pair.data, 1), (pair.data, 1)], [], i)
    with pytest.raises(QueueFullError):
        pair.drv.add(pair.mem, [(pair.data, 1)], [], 99)
    assert pair.drv.num_free == 0
    chains = pair.dev.pop_batch(pair.mem, 8)
    pair.dev.push_used_batch(pair.mem, [(c, 0) for c in reversed(chains)])
    assert [t for t, _ in pair.drv.get_used_batch(pair.mem, 8)] == [3, 2, 1, 0]
