"""The driver side of a virtqueue against its device side, both ring formats, as a
hypothesis state machine checked against a model.

Each run negotiates a random feature set (INDIRECT_DESC, EVENT_IDX, IN_ORDER,
NOTIFICATION_DATA), a queue size and a guest memory (contiguous, 1-byte fragments, Xen
grant-DMA addresses). Rules add random buffers, kick, pop, complete in random order and
batch sizes (in order under IN_ORDER), collect used buffers, switch notifications on and
off, and reset. The model checks that every buffer comes back exactly once, in the order
the device used it, with its token, its written length and the device's bytes; that the
device sees exactly the segments and bytes the driver exposed; that no notification is
lost (a side that went to sleep with notifications enabled is always woken when there is
work for it) and that suppression is honoured.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.mem.grant_dma import XEN_PAGE_SIZE, GrantDmaMemory, grant_dma_addr
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.queue import (
    DescriptorChain,
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

OPTIONAL = {
    "indirect": S.VIRTIO_RING_F_INDIRECT_DESC,
    "event_idx": S.VIRTIO_RING_F_EVENT_IDX,
    "in_order": S.VIRTIO_F_IN_ORDER,
    "notification_data": S.VIRTIO_F_NOTIFICATION_DATA,
}
PAGES = 8
POOL = 0x1000  # indirect tables: 8 of 4 descriptors
POOL_TABLES, TABLE_DESCS = 8, 4
DATA = 0x2000
SLOT = 512  # buffer memory per outstanding buffer: up to 6 segments of up to 64 bytes
SLOTS = 24
QUEUE_INDEX = 2


def _grant_memory() -> tuple[GuestMemory, int]:
    backing = bytearray(PAGES * XEN_PAGE_SIZE)
    pages = [memoryview(backing)[i * XEN_PAGE_SIZE : (i + 1) * XEN_PAGE_SIZE] for i in range(PAGES)]
    return GrantDmaMemory(lambda gref: pages[gref] if gref < PAGES else None), grant_dma_addr(0)


MEMORIES: dict[str, Callable[[], tuple[GuestMemory, int]]] = {
    "flat": lambda: (FlatMemory(PAGES * XEN_PAGE_SIZE), 0),
    "fragmented": lambda: (FragmentedMemory(PAGES * XEN_PAGE_SIZE, fragment=1), 0),
    "grant-dma": _grant_memory,
}


def driver_bytes(token: int, n: int) -> bytes:
    return bytes((token * 31 + i) & 0xFF for i in range(n))


def device_bytes(token: int, n: int) -> bytes:
    return bytes((token * 17 + 3 * i + 1) & 0xFF for i in range(n))


@dataclass
class Buffer:
    token: int
    slot: int
    readable: tuple[tuple[int, int], ...]
    writable: tuple[tuple[int, int], ...]
    descs: int  # ring descriptors the driver should have used
    table: bool
    written: int = -1

    @property
    def writable_len(self) -> int:
        return sum(n for _, n in self.writable)


segment_lengths = st.lists(st.integers(0, 64), max_size=3)
FRACTIONS = st.sampled_from([0.0, 0.5, 1.0])


class VirtqueuePair(RuleBasedStateMachine):
    popped = Bundle("popped")

    @initialize(
        fmt=st.sampled_from(RingFormat),
        size_exp=st.integers(1, 4),
        odd=st.booleans(),
        features=st.sets(st.sampled_from(sorted(OPTIONAL))),
        memory=st.sampled_from(sorted(MEMORIES)),
    )
    def setup(
        self, fmt: RingFormat, size_exp: int, odd: bool, features: set[str], memory: str
    ) -> None:
        size = 1 << size_exp
        if fmt is RingFormat.PACKED and odd:
            size -= 1 if size > 2 else 0  # packed rings need not be a power of 2
        bits = 1 << S.VIRTIO_F_VERSION_1 | (1 << S.VIRTIO_F_RING_PACKED) * (
            fmt is RingFormat.PACKED
        )
        for name in features:
            bits |= 1 << OPTIONAL[name]
        self.mem, base = MEMORIES[memory]()
        self.base = base
        addrs = ring_addrs(fmt is RingFormat.PACKED, base, size)
        self.cfg = QueueConfig(size, addrs.desc, addrs.driver, addrs.device, bits, QUEUE_INDEX)
        self.fmt, self.size = fmt, size
        self.pool = IndirectPool(base + POOL, TABLE_DESCS, POOL_TABLES)
        self.drv: DriverQueue[int] = make_driver_queue(fmt, self.cfg, self.pool)
        self.dev: DeviceQueue = make_device_queue(fmt, self.cfg)
        self.drv.init_rings(self.mem)
        self.next_token = 0
        self.clear_model()

    def clear_model(self) -> None:
        self.outstanding: dict[int, Buffer] = {}  # added, not yet returned
        self.unpopped: deque[int] = deque()  # added, not yet popped (avail order)
        self.held: dict[int, DescriptorChain] = {}  # popped, not yet used: token -> chain
        self.pop_order: deque[int] = deque()  # IN_ORDER: tokens held, in pop order
        self.used: deque[int] = deque()  # used by the device, not yet returned
        self.free_slots = list(range(SLOTS))
        self.free_descs = self.size
        self.free_tables = POOL_TABLES
        self.descs_added = self.buffers_added = 0
        self.driver_waiting = self.device_waiting = False
        self.cb_disabled = self.notify_disabled = False

    # -- driver ---------------------------------------------------------------------------
    @precondition(lambda self: self.free_slots)
    @rule(readable=segment_lengths, writable=segment_lengths)
    def add(self, readable: list[int], writable: list[int]) -> None:
        if not readable and not writable:
            writable = [8]
        token, self.next_token = self.next_token, self.next_token + 1
        slot = self.free_slots.pop()
        base = self.base + DATA + SLOT * slot
        rd = tuple((base + 64 * i, n) for i, n in enumerate(readable))
        wr = tuple((base + 64 * (3 + i), n) for i, n in enumerate(writable))
        elements = len(rd) + len(wr)
        if elements > self.size:  # more elements than Queue Size: refused outright
            with pytest.raises(ValueError):
                self.drv.add(self.mem, rd, wr, token)
            self.free_slots.append(slot)
            return
        table = self.cfg.indirect_desc and 1 < elements <= TABLE_DESCS and self.free_tables > 0
        buf = Buffer(token, slot, rd, wr, 1 if table else elements, table)
        for addr, n in rd:
            self.mem.write(addr, driver_bytes(token + addr, n))
        try:
            self.drv.add(self.mem, rd, wr, token)
        except QueueFullError:
            assert buf.descs > self.free_descs, "refused although it fits"
            self.free_slots.append(slot)
            return
        assert buf.descs <= self.free_descs, "accepted although it does not fit"
        self.free_descs -= buf.descs
        self.free_tables -= table
        self.outstanding[token] = buf
        self.unpopped.append(token)
        self.descs_added += buf.descs
        self.buffers_added += 1

    @rule()
    def kick(self) -> None:
        kicked = self.drv.kick_prepare(self.mem)
        if self.unpopped and self.device_waiting:  # buffers added since it went to sleep
            assert kicked, "available buffer notification lost"
        if self.notify_disabled and not self.cfg.event_idx:
            assert not kicked, "device asked for no notifications"
        if self.cfg.ring_format is RingFormat.PACKED and self.notify_disabled:
            assert not kicked, "RING_EVENT_FLAGS_DISABLE not honoured"
        if kicked:
            self.device_waiting = False
        if self.cfg.notification_data:
            self.check_notification_data()

    def check_notification_data(self) -> None:
        data = self.drv.notification_data()
        assert data & 0xFFFF == QUEUE_INDEX
        if self.fmt is RingFormat.PACKED:
            lin = self.descs_added % (2 * self.size)
            expect = lin % self.size | (1 << 15 if lin < self.size else 0)
        else:
            expect = self.buffers_added & 0xFFFF
        assert data >> 16 == expect

    @rule(limit=st.integers(1, 8))
    def get_used(self, limit: int) -> None:
        got = self.drv.get_used_batch(self.mem, limit)
        assert len(got) == min(limit, len(self.used)), "used buffers missing or invented"
        for token, length in got:
            assert token == self.used.popleft(), "used buffers out of order"
            buf = self.outstanding.pop(token)
            assert length == buf.written
            data = b"".join(self.mem.read(a, n) for a, n in buf.writable)
            assert data[:length] == device_bytes(token, length)
            self.free_slots.append(buf.slot)
            self.free_descs += buf.descs
            self.free_tables += buf.table
        self.driver_waiting = False

    @rule()
    def enable_cb(self) -> None:
        pending = self.drv.enable_cb(self.mem)
        self.cb_disabled = False
        assert pending == bool(self.used), "enable_cb misjudged pending used buffers"
        self.driver_waiting = not pending

    @rule()
    def disable_cb(self) -> None:
        self.drv.disable_cb(self.mem)
        self.cb_disabled = True
        self.driver_waiting = False

    # -- device ---------------------------------------------------------------------------
    @rule(target=popped, limit=st.integers(1, 8))
    def pop(self, limit: int) -> object:
        chains = self.dev.pop_batch(self.mem, limit)
        assert len(chains) == min(limit, len(self.unpopped))
        for chain in chains:
            token = self.unpopped.popleft()
            buf = self.outstanding[token]
            assert chain.readable == buf.readable and chain.writable == buf.writable
            assert chain.desc_count == buf.descs
            reader = chain.reader(self.mem)
            for addr, n in buf.readable:
                assert reader.read(n) == driver_bytes(token + addr, n)
            self.held[token] = chain
            self.pop_order.append(token)
        self.device_waiting = False
        return multiple(*list(self.pop_order)[len(self.pop_order) - len(chains) :])

    @precondition(lambda self: not self.cfg.in_order)
    @rule(token=consumes(popped), fraction=st.floats(0, 1))
    def complete_one(self, token: int, fraction: float) -> None:
        if token in self.held:  # not completed by a batch meanwhile
            self.use([token], [fraction])

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def complete_batch(self, data: st.DataObject) -> None:
        tokens = list(self.pop_order)
        if not self.cfg.in_order:
            tokens = data.draw(st.permutations(tokens))
        count = data.draw(st.integers(1, len(tokens)))
        fractions = data.draw(
            st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=count, max_size=count)
        )
        self.use(tokens[:count], fractions)

    def use(self, tokens: list[int], fractions: list[float]) -> None:
        items = []
        for token, fraction in zip(tokens, fractions, strict=True):
            chain = self.held.pop(token)
            self.pop_order.remove(token)
            written = int(chain.writable_len * fraction)
            chain.writer(self.mem).write(device_bytes(token, written))
            self.outstanding[token].written = written
            self.used.append(token)
            items.append((chain, written))
        if len(items) == 1:
            self.dev.push_used(self.mem, *items[0])
        else:
            self.dev.push_used_batch(self.mem, items)
        notify = self.dev.needs_notify(self.mem)
        if self.driver_waiting:
            assert notify, "used buffer notification lost"
        if self.cb_disabled:
            assert not notify, "driver asked for no notifications"
        if notify:
            self.driver_waiting = False

    @rule()
    def enable_notification(self) -> None:
        pending = self.dev.enable_notification(self.mem)
        self.notify_disabled = False
        assert pending == bool(self.unpopped)
        self.device_waiting = not pending

    @rule()
    def disable_notification(self) -> None:
        self.dev.disable_notification(self.mem)
        self.notify_disabled = True
        self.device_waiting = False

    @rule()
    def reset(self) -> None:
        detached = self.drv.detach_unused()
        assert sorted(detached) == sorted(self.outstanding)
        self.dev.reset()
        self.drv.init_rings(self.mem)
        self.clear_model()

    # -- invariants and the end ----------------------------------------------------------
    @invariant()
    def descriptors_accounted(self) -> None:
        if hasattr(self, "drv"):
            assert self.drv.num_free == self.free_descs
            assert not self.drv.broken

    def teardown(self) -> None:
        if not hasattr(self, "drv"):
            return
        self.kick()
        for _ in range(4 * SLOTS):
            if not (self.unpopped or self.held or self.used):
                break
            self.pop(8)
            if self.held:
                tokens = list(self.pop_order)
                self.use(tokens, [1.0] * len(tokens))
            self.get_used(8)
        assert not self.outstanding, "buffers never came back"
        assert self.drv.num_free == self.size


VirtqueuePair.TestCase.settings = settings(max_examples=300, stateful_step_count=50)
TestVirtqueuePair = VirtqueuePair.TestCase
