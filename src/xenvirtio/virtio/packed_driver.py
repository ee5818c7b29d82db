"""Packed virtqueue, driver side (virtio 1.2 2.8.21, 2.8.22).

Buffers go in with a token and come back by it. The driver keeps its own record of every
buffer id it exposed (token, descriptor count, writable bytes, indirect table) and never
reads its descriptors back, so a device that scribbles on the ring cannot confuse it:
a used descriptor must name an outstanding id and a length within the buffer
(`InvalidUsedError`), and the first `VirtqueueError` latches `broken`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from xenvirtio.mem.api import GPA_LIMIT, GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.layout import IndirectPool, buffer_elements
from xenvirtio.virtio.packed_ring import (
    BODY_ST,
    DESC_ST,
    EVENT_ST,
    F_INDIRECT,
    F_NEXT,
    F_WRITE,
    FLAGS_OFF,
    LEN_OFF,
    OFF_MASK,
    START,
    U16_ST,
    USED_ST,
    WRAP,
    advance,
    check_packed_config,
    event_wanted,
    ring_sizes,
)
from xenvirtio.virtio.queue import (
    InvalidUsedError,
    QueueBrokenError,
    QueueConfig,
    QueueFullError,
    VirtqueueError,
)
from xenvirtio.virtio.rings import DESC, DEVICE, DRIVER, RingAreas, store_u16

T = TypeVar("T")


class PackedDriverQueue(Generic[T]):
    """Driver side of a packed virtqueue. See `xenvirtio.virtio.queue.DriverQueue`."""

    def __init__(self, cfg: QueueConfig, indirect: IndirectPool | None = None) -> None:
        check_packed_config(cfg)
        self.config = cfg
        self._size = cfg.size
        self._event_idx = cfg.event_idx
        self._in_order = cfg.in_order
        self._pool = indirect if cfg.indirect_desc else None
        self._areas: RingAreas | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        if self._areas is not None:
            self._areas.release()
        self._areas = None
        self._dv: memoryview | None = None  # zero-copy descriptor ring, when mem allows
        size = self._size
        self._next_avail = START  # ring position: offset | wrap counter << 15
        self._next_used = START
        self._free_ids = list(range(size - 1, -1, -1))
        self._num_free = size
        # Per buffer id, while outstanding: token, ring descriptors (0: not outstanding),
        # device-writable bytes, indirect table address or -1.
        self._tokens: list[T | None] = [None] * size
        self._ndescs = [0] * size
        self._wlen = [0] * size
        self._table = [-1] * size
        self._order: deque[int] = deque()  # IN_ORDER: ids in avail order
        self._done: deque[tuple[T, int]] = deque()  # IN_ORDER: batch not yet returned
        self._added = 0  # descriptors made available since the last kick_prepare
        self._broken = False
        if self._pool is not None:
            self._pool.reset()

    @property
    def num_free(self) -> int:
        return self._num_free

    @property
    def broken(self) -> bool:
        return self._broken

    def _bind(self, mem: GuestMemory) -> RingAreas:
        if self._broken:
            raise QueueBrokenError("virtqueue is broken; reset it")
        areas = self._areas
        if areas is None or areas.mem is not mem:
            cfg = self.config
            areas = self._areas = RingAreas(
                mem,
                (cfg.desc_addr, cfg.driver_addr, cfg.device_addr),
                ring_sizes(self._size),
                (True, True, True),  # the device event area too: the driver zeroes it
            )
            self._dv = None if areas.views is None else areas.views[DESC]
        return areas

    def init_rings(self, mem: GuestMemory) -> None:
        """Zero the ring (2.8.13: the descriptor ring is zero-initialized) and both event
        suppression areas (RING_EVENT_FLAGS_ENABLE)."""
        self._bind(mem).zero()

    # -- adding buffers ---------------------------------------------------------------------
    def add(
        self,
        mem: GuestMemory,
        readable: Sequence[tuple[int, int]],
        writable: Sequence[tuple[int, int]],
        token: T,
    ) -> None:
        areas = self._areas
        if areas is None or areas.mem is not mem or self._broken:
            areas = self._bind(mem)
        if len(readable) + len(writable) != 1:
            self._add_list(mem, areas, buffer_elements(readable, writable), token)
            return
        # The common case: one element, one descriptor.
        addr, length = readable[0] if readable else writable[0]
        if addr < 0 or not 0 <= length < 1 << 32 or addr + length > GPA_LIMIT:
            raise ValueError(f"bad element [{addr:#x}, +{length:#x})")
        if not self._num_free:
            raise QueueFullError("no free descriptor")
        bid = self._free_ids.pop()
        self._publish_one(areas, addr, length, 0 if readable else F_WRITE, bid)
        self._tokens[bid] = token
        self._ndescs[bid] = 1
        self._wlen[bid] = 0 if readable else length
        self._table[bid] = -1
        if self._in_order:
            self._order.append(bid)
        self._num_free -= 1

    def _add_list(
        self, mem: GuestMemory, areas: RingAreas, segs: list[tuple[int, int, int]], token: T
    ) -> None:
        if len(segs) > self._size:  # 2.8.18, with or without an indirect table
            raise ValueError(f"{len(segs)} elements exceed Queue Size {self._size}")
        table = self._alloc_table(len(segs))
        count = 1 if table >= 0 else len(segs)
        if count > self._num_free:
            if table >= 0 and self._pool is not None:
                self._pool.free(table)
            raise QueueFullError(f"{count} descriptors needed, {self._num_free} free")
        wlen = sum(n for _, n, f in segs if f)
        bid = self._free_ids[-1]
        if table >= 0:
            self._write_table(mem, table, segs)
            self._publish_one(areas, table, 16 * len(segs), F_INDIRECT, bid)
        else:
            self._publish(areas, segs, bid)
        self._free_ids.pop()
        self._tokens[bid] = token
        self._ndescs[bid] = count
        self._wlen[bid] = wlen
        self._table[bid] = table
        if self._in_order:
            self._order.append(bid)
        self._num_free -= count

    def _alloc_table(self, elements: int) -> int:
        pool = self._pool
        if pool is None or not 1 < elements <= pool.slot_descs:
            return -1
        table = pool.alloc()
        return -1 if table is None else table

    def _write_table(self, mem: GuestMemory, table: int, segs: list[tuple[int, int, int]]) -> None:
        """An indirect table (2.8.7): WRITE is the only flag, ids are ignored."""
        try:
            mem.write(table, b"".join(DESC_ST.pack(a, n, 0, f) for a, n, f in segs))
        except GuestMemoryError:
            if self._pool is not None:
                self._pool.free(table)
            raise

    def _publish_one(self, areas: RingAreas, addr: int, length: int, flags: int, bid: int) -> None:
        """One descriptor at ``next_avail``: addr, len and id, then the flags that publish
        it (2.8.21.1; AVAIL = the driver wrap counter, USED its inverse, 2.8.1)."""
        pos = self._next_avail
        off = (pos & OFF_MASK) << 4
        flags |= S.VIRTQ_PACKED_DESC_F_AVAIL if pos & WRAP else S.VIRTQ_PACKED_DESC_F_USED
        dv = self._dv
        if dv is not None:
            BODY_ST.pack_into(dv, off, addr, length, bid)
            store_u16(dv, off + FLAGS_OFF, flags)
        else:
            areas.pack(DESC, off, BODY_ST, addr, length, bid)
            areas.pack(DESC, off + FLAGS_OFF, U16_ST, flags)
        off = (pos & OFF_MASK) + 1
        self._next_avail = pos + 1 if off < self._size else (pos & WRAP) ^ WRAP
        self._added += 1

    def _publish(self, areas: RingAreas, segs: Sequence[tuple[int, int, int]], bid: int) -> None:
        """Write a list's descriptors from ``next_avail`` (2.8.21.1); the first one's flags
        go last, so the device never sees a partial list."""
        pos = head = self._next_avail
        size, last, dv = self._size, len(segs) - 1, self._dv
        head_flags = 0
        for i, (addr, length, flags) in enumerate(segs):
            flags |= S.VIRTQ_PACKED_DESC_F_AVAIL if pos & WRAP else S.VIRTQ_PACKED_DESC_F_USED
            if i < last:
                flags |= F_NEXT
            off = (pos & OFF_MASK) << 4
            if i == 0:
                areas.pack(DESC, off, BODY_ST, addr, length, bid)
                head_flags = flags
            elif dv is not None:
                DESC_ST.pack_into(dv, off, addr, length, bid, flags)
            else:
                areas.pack(DESC, off, DESC_ST, addr, length, bid, flags)
            pos = pos + 1 if (pos & OFF_MASK) + 1 < size else (pos & WRAP) ^ WRAP
        areas.pack(DESC, ((head & OFF_MASK) << 4) + FLAGS_OFF, U16_ST, head_flags)
        self._next_avail = pos
        self._added += last + 1

    def kick_prepare(self, mem: GuestMemory) -> bool:
        areas = self._bind(mem)
        added, self._added = self._added, 0
        if not added:
            return False
        off_wrap, flags = areas.unpack(DEVICE, 0, EVENT_ST)  # 2.8.21.3.1
        return event_wanted(off_wrap, flags, self._event_idx, self._next_avail, added, self._size)

    def notification_data(self) -> int:
        """virtio 1.2 2.9: vq index, next_off (15 bits) and next_wrap of the next
        descriptor not yet made available."""
        return self.config.index | self._next_avail << 16

    # -- used buffers -----------------------------------------------------------------------
    def get_used(self, mem: GuestMemory) -> tuple[T, int] | None:
        items = self.get_used_batch(mem, 1)
        return items[0] if items else None

    def get_used_batch(self, mem: GuestMemory, max_items: int) -> list[tuple[T, int]]:
        areas = self._bind(mem)
        out: list[tuple[T, int]] = []
        done = self._done
        try:
            while len(out) < max_items:
                if done:
                    out.append(done.popleft())
                elif not self._take_used(areas, out):
                    break
        except VirtqueueError:
            self._broken = True
            raise
        return out

    def _take_used(self, areas: RingAreas, out: list[tuple[T, int]]) -> bool:
        """Consume the used descriptor at ``next_used`` if there is one (2.8.22): flags
        first, then len and id."""
        pos, dv = self._next_used, self._dv
        off = (pos & OFF_MASK) << 4
        if dv is not None:
            (flags,) = U16_ST.unpack_from(dv, off + FLAGS_OFF)
        else:
            (flags,) = areas.unpack(DESC, off + FLAGS_OFF, U16_ST)
        if flags & 0x8080 != (0x8080 if pos & WRAP else 0):
            return False  # 2.8.1: used when AVAIL and USED both equal our wrap counter
        if dv is not None:
            length, bid = USED_ST.unpack_from(dv, off + LEN_OFF)
        else:
            length, bid = areas.unpack(DESC, off + LEN_OFF, USED_ST)
        if not flags & F_WRITE:
            length = 0  # 2.8.4: len is reserved without VIRTQ_DESC_F_WRITE
        if self._in_order:
            self._take_in_order(bid, length)
        else:
            out.append(self._complete(bid, length))
        return True

    def _take_in_order(self, bid: int, length: int) -> None:
        """IN_ORDER (2.8.8): one used descriptor stands for every buffer up to ``bid``;
        the ones before it were used completely."""
        if not (bid < self._size and self._ndescs[bid]):
            raise InvalidUsedError(f"used buffer id {bid} is not outstanding")
        order, done = self._order, self._done
        while True:
            head = order.popleft()
            if head == bid:
                done.append(self._complete(head, length))
                return
            done.append(self._complete(head, self._wlen[head]))

    def _complete(self, bid: int, length: int) -> tuple[T, int]:
        if bid >= self._size or not (count := self._ndescs[bid]):
            raise InvalidUsedError(f"used buffer id {bid} is not outstanding")
        if length > self._wlen[bid]:
            raise InvalidUsedError(f"used len {length} > {self._wlen[bid]} writable bytes")
        token = self._tokens[bid]
        self._tokens[bid] = None
        self._ndescs[bid] = 0
        self._free_ids.append(bid)
        self._num_free += count
        self._next_used = advance(self._next_used, count, self._size)
        table = self._table[bid]
        if table >= 0 and self._pool is not None:
            self._pool.free(table)
        return token, length  # type: ignore[return-value]

    # -- callbacks and reset ----------------------------------------------------------------
    def enable_cb(self, mem: GuestMemory) -> bool:
        areas = self._bind(mem)
        if self._event_idx:  # 2.8.14: an event once the next descriptor is used
            areas.pack(DRIVER, 0, EVENT_ST, self._next_used, S.RING_EVENT_FLAGS_DESC)
        else:
            areas.pack(DRIVER, 2, U16_ST, S.RING_EVENT_FLAGS_ENABLE)
        if self._done:
            return True
        pos = self._next_used
        (flags,) = areas.unpack(DESC, 16 * (pos & OFF_MASK) + FLAGS_OFF, U16_ST)
        wrap = pos >> 15
        return (flags >> 15 & 1) == wrap and (flags >> 7 & 1) == wrap

    def disable_cb(self, mem: GuestMemory) -> None:
        self._bind(mem).pack(DRIVER, 2, U16_ST, S.RING_EVENT_FLAGS_DISABLE)

    def detach_unused(self) -> list[T]:
        tokens = [token for token, _ in self._done]
        ids = self._order if self._in_order else range(self._size)
        tokens += [self._tokens[i] for i in ids if self._ndescs[i]]  # type: ignore[misc]
        self._reset_state()
        return tokens
