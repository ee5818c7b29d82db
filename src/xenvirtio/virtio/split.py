"""Split virtqueue, device side (virtio 1.2 2.7). The driver side is `split_driver`.

The guest is hostile. Each descriptor is read once (``struct.unpack_from`` copies it),
validated, and only the copy is used. Every walk is bounded: a direct chain by Queue Size,
an indirect table by its own entry count, and the number of buffers taken per avail index
read by Queue Size (`InvalidAvailIdx`). Buffers are checked against guest memory at pop
time, so a `DescriptorChain` holds only mapped ranges.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence
from functools import lru_cache

from xenvirtio.mem.api import GPA_LIMIT, GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.queue import (
    ChainLengthOverflowError,
    ChainTooLongError,
    DescriptorAddressError,
    DescriptorChain,
    DescriptorLoopError,
    DescriptorOrderError,
    IndirectTableError,
    InvalidAvailIdx,
    InvalidHeadError,
    NestedIndirectError,
    QueueConfig,
)
from xenvirtio.virtio.rings import DESC, DEVICE, DRIVER, RingAreas, need_event, store_u16
from xenvirtio.virtio.split_driver import SplitDriverQueue, check_split_config

__all__ = ["SplitDeviceQueue", "SplitDriverQueue", "check_split_config"]

_DESC = S.VIRTQ_DESC
_U16 = S.VIRTQ_U16
_USED_ELEM = S.VIRTQ_USED_ELEM
_NEXT = S.VIRTQ_DESC_F_NEXT
_WRITE = S.VIRTQ_DESC_F_WRITE
_INDIRECT = S.VIRTQ_DESC_F_INDIRECT
_MAX_CHAIN_BYTES = 1 << 32  # virtio 1.2 2.7.5.2: no chain longer than 2**32 bytes


@lru_cache(maxsize=256)
def _heads_st(count: int) -> struct.Struct:
    """``count`` avail ring entries (le16), decoded in one call."""
    return struct.Struct(f"<{count}H")


def _check_buffer(mem: GuestMemory, addr: int, length: int, write: int) -> None:
    if addr + length > GPA_LIMIT:
        raise DescriptorAddressError(f"buffer [{addr:#x}, +{length:#x}) overflows 64 bits")
    try:
        mem.check(addr, length, bool(write))
    except GuestMemoryError as err:
        raise DescriptorAddressError(f"buffer not accessible: {err}", err) from err


class _ChainBuilder:
    """Accumulates validated segments of a multi-descriptor chain."""

    __slots__ = ("count", "limit", "readable", "rlen", "wlen", "writable")

    def __init__(self, limit: int) -> None:
        self.readable: list[tuple[int, int]] = []
        self.writable: list[tuple[int, int]] = []
        self.rlen = self.wlen = self.count = 0
        self.limit = limit

    def add(self, addr: int, length: int, flags: int) -> None:
        """Structural checks only; `check_memory` runs once the whole chain is known."""
        self.count += 1
        if self.count > self.limit:  # 2.7.5.3.1: no chain longer than Queue Size
            raise ChainTooLongError(f"chain has more than {self.limit} descriptors")
        write = flags & _WRITE
        if not write and self.writable:  # 2.7.4.2: readable elements before writable ones
            raise DescriptorOrderError("device-readable descriptor after a writable one")
        if self.rlen + self.wlen + length > _MAX_CHAIN_BYTES:
            raise ChainLengthOverflowError("chain longer than 2**32 bytes")
        if write:
            self.writable.append((addr, length))
            self.wlen += length
        else:
            self.readable.append((addr, length))
            self.rlen += length

    def check_memory(self, mem: GuestMemory) -> None:
        """Every segment mapped, and writable where the device writes (as `_check_buffer`)."""
        check = mem.check
        for segments, write in ((self.readable, False), (self.writable, True)):
            for addr, length in segments:
                if addr + length > GPA_LIMIT:
                    raise DescriptorAddressError(
                        f"buffer [{addr:#x}, +{length:#x}) overflows 64 bits"
                    )
                try:
                    check(addr, length, write)
                except GuestMemoryError as err:
                    raise DescriptorAddressError(f"buffer not accessible: {err}", err) from err


class SplitDeviceQueue:
    """Device side of a split virtqueue. See `xenvirtio.virtio.queue.DeviceQueue`."""

    def __init__(self, cfg: QueueConfig) -> None:
        check_split_config(cfg)
        self.config = cfg
        self._size = cfg.size
        self._mask = cfg.size - 1
        self._event_idx = cfg.event_idx
        self._indirect = cfg.indirect_desc
        self._in_order = cfg.in_order
        self._used_event_off = 4 + 2 * cfg.size  # in the avail ring
        self._avail_event_off = 4 + 8 * cfg.size  # in the used ring
        self._areas: RingAreas | None = None
        self.reset()

    # -- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        self._next_avail = 0
        self._next_used = 0
        self._signalled_used = 0
        self._signalled_valid = True
        self._pushed_since_signal = 0
        self._notify_enabled = True
        self._inflight: deque[DescriptorChain] = deque()  # IN_ORDER: popped, not used
        self._areas = None
        # Zero-copy views of the descriptor table, avail ring and used ring, when the
        # memory gives contiguous ones; None: every access goes through `RingAreas`.
        self._dv: memoryview | None = None
        self._av: memoryview | None = None
        self._uv: memoryview | None = None

    @property
    def next_avail(self) -> int:
        return self._next_avail

    @next_avail.setter
    def next_avail(self, value: int) -> None:
        self._next_avail = value & 0xFFFF
        self._inflight.clear()

    @property
    def next_used(self) -> int:
        return self._next_used

    @next_used.setter
    def next_used(self, value: int) -> None:
        self._next_used = value & 0xFFFF
        self._signalled_valid = False  # after restore, notify once to be safe

    def _bind(self, mem: GuestMemory) -> RingAreas:
        areas = self._areas
        if areas is None or areas.mem is not mem:
            cfg = self.config
            areas = self._areas = RingAreas(
                mem,
                (cfg.desc_addr, cfg.driver_addr, cfg.device_addr),
                (16 * self._size, 6 + 2 * self._size, 6 + 8 * self._size),
                (False, False, True),
            )
            views = areas.views
            self._dv, self._av, self._uv = (None, None, None) if views is None else views
        return areas

    # -- available buffers ----------------------------------------------------------------
    def _pending(self, areas: RingAreas) -> int:
        av = self._av
        avail_idx: int
        if av is not None:
            (avail_idx,) = _U16.unpack_from(av, 2)
        else:
            (avail_idx,) = areas.unpack(DRIVER, 2, _U16)
        pending = (avail_idx - self._next_avail) & 0xFFFF
        if pending > self._size:  # at most Queue Size buffers can be outstanding (2.7.13)
            raise InvalidAvailIdx(f"avail idx {avail_idx} is {pending} ahead of {self._next_avail}")
        return pending

    def _popped(self, areas: RingAreas, chains: list[DescriptorChain]) -> None:
        self._next_avail = (self._next_avail + len(chains)) & 0xFFFF
        if self._in_order:
            self._inflight.extend(chains)
        if self._event_idx and self._notify_enabled:
            uv = self._uv
            if uv is not None:
                store_u16(uv, self._avail_event_off, self._next_avail)
            else:
                areas.pack(DEVICE, self._avail_event_off, _U16, self._next_avail)

    def pop(self, mem: GuestMemory) -> DescriptorChain | None:
        areas = self._bind(mem)
        if not self._pending(areas):
            return None
        chain = self._walk(mem, areas, self._heads(areas, 1)[0])
        self._popped(areas, [chain])
        return chain

    def pop_batch(self, mem: GuestMemory, max_chains: int) -> list[DescriptorChain]:
        areas = self._bind(mem)
        count = min(self._pending(areas), max_chains)
        if count <= 0:
            return []
        walk = self._walk
        chains = [walk(mem, areas, head) for head in self._heads(areas, count)]
        self._popped(areas, chains)
        return chains

    def _heads(self, areas: RingAreas, count: int) -> tuple[int, ...]:
        """One copy of ``count`` avail ring entries from ``next_avail`` (may wrap)."""
        start = self._next_avail & self._mask
        first = min(count, self._size - start)
        rest = count - first
        av = self._av
        if av is not None:
            heads: tuple[int, ...] = _heads_st(first).unpack_from(av, 4 + 2 * start)
            return heads + _heads_st(rest).unpack_from(av, 4) if rest else heads
        heads = _heads_st(first).unpack(areas.read(DRIVER, 4 + 2 * start, 2 * first))
        if rest:
            heads += _heads_st(rest).unpack(areas.read(DRIVER, 4, 2 * rest))
        return heads

    def _walk(self, mem: GuestMemory, areas: RingAreas, head: int) -> DescriptorChain:
        if head >= self._size:
            raise InvalidHeadError(f"avail ring head {head} >= Queue Size {self._size}")
        dv = self._dv
        if dv is not None:
            desc = _DESC.unpack_from(dv, head << 4)
        else:
            desc = areas.unpack(DESC, head << 4, _DESC)
        addr, length, flags, _ = desc
        if flags & (_NEXT | _INDIRECT):
            return self._walk_chain(mem, areas, head, desc)
        # Fast path: a single direct descriptor.
        if addr + length > GPA_LIMIT:
            raise DescriptorAddressError(f"buffer [{addr:#x}, +{length:#x}) overflows 64 bits")
        write = flags & _WRITE
        try:
            mem.check(addr, length, write != 0)
        except GuestMemoryError as err:
            raise DescriptorAddressError(f"buffer not accessible: {err}", err) from err
        if write:
            return DescriptorChain(head, (), ((addr, length),), 0, length, 1)
        return DescriptorChain(head, ((addr, length),), (), length, 0, 1)

    def _walk_chain(
        self, mem: GuestMemory, areas: RingAreas, head: int, desc: tuple[int, ...]
    ) -> DescriptorChain:
        """A chain linked by VIRTQ_DESC_F_NEXT and/or ending in an indirect table;
        ``desc`` is the copy of the head descriptor (read once, by `_walk`)."""
        size, dv = self._size, self._dv
        builder = _ChainBuilder(size)
        index, ring_descs = head, 1
        while True:
            addr, length, flags, nxt = desc
            if flags & _INDIRECT:
                self._walk_indirect(mem, builder, addr, length, flags)
                break
            builder.add(addr, length, flags)
            if not flags & _NEXT:
                break
            if nxt >= size:
                raise InvalidHeadError(f"descriptor {index} next {nxt} >= Queue Size")
            index = nxt
            ring_descs += 1
            if ring_descs > size:  # more hops than entries: the chain loops
                raise DescriptorLoopError(f"descriptor chain from {head} loops")
            if dv is not None:
                desc = _DESC.unpack_from(dv, index << 4)
            else:
                desc = areas.unpack(DESC, index << 4, _DESC)
        builder.check_memory(mem)
        return DescriptorChain(
            head,
            tuple(builder.readable),
            tuple(builder.writable),
            builder.rlen,
            builder.wlen,
            ring_descs,
        )

    def _walk_indirect(
        self, mem: GuestMemory, builder: _ChainBuilder, addr: int, length: int, flags: int
    ) -> None:
        """Walk one indirect table (virtio 1.2 2.7.5.3), copied in a single read."""
        if not self._indirect:
            raise IndirectTableError("VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC")
        if flags & _NEXT:
            raise IndirectTableError("VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT")
        if length == 0 or length % S.VIRTQ_DESC_SIZE:
            raise IndirectTableError(f"indirect table length {length} is not n*16, n > 0")
        entries = length // S.VIRTQ_DESC_SIZE
        if entries > self._size:  # a device's reasonable limit (2.7.4.1), bounds the copy
            raise ChainTooLongError(f"indirect table of {entries} > Queue Size entries")
        _check_buffer(mem, addr, length, 0)
        try:
            table = mem.read(addr, length)
        except GuestMemoryError as err:
            raise DescriptorAddressError(f"indirect table: {err}", err) from err
        index = hops = 0
        while True:
            hops += 1
            if hops > entries:
                raise DescriptorLoopError("indirect descriptor chain loops")
            d_addr, d_len, d_flags, nxt = _DESC.unpack_from(table, 16 * index)
            if d_flags & _INDIRECT:
                raise NestedIndirectError("indirect descriptor inside an indirect table")
            builder.add(d_addr, d_len, d_flags)
            if not d_flags & _NEXT:
                return
            if nxt >= entries:
                raise InvalidHeadError(f"indirect next {nxt} outside a {entries}-entry table")
            index = nxt

    # -- used buffers ---------------------------------------------------------------------
    def push_used(self, mem: GuestMemory, chain: DescriptorChain, written: int) -> None:
        if self._in_order or not 0 <= written <= chain.writable_len:
            self.push_used_batch(mem, ((chain, written),))
            return
        areas = self._bind(mem)
        used, uv = self._next_used, self._uv
        self._next_used = new = (used + 1) & 0xFFFF
        self._pushed_since_signal += 1
        # 2.7.8.2: the entry before the idx update.
        if uv is not None:
            _USED_ELEM.pack_into(uv, 4 + 8 * (used & self._mask), chain.head, written)
            store_u16(uv, 2, new)
        else:
            areas.pack(DEVICE, 4 + 8 * (used & self._mask), _USED_ELEM, chain.head, written)
            areas.pack(DEVICE, 2, _U16, new)

    def push_used_batch(
        self, mem: GuestMemory, items: Sequence[tuple[DescriptorChain, int]]
    ) -> None:
        if not items:
            return
        areas = self._bind(mem)
        for chain, written in items:
            if not 0 <= written <= chain.writable_len:
                raise ValueError(f"written {written} outside [0, {chain.writable_len}]")
        if self._in_order:
            self._write_in_order(areas, items)
        else:
            self._write_used(areas, items)
        self._next_used = new = (self._next_used + len(items)) & 0xFFFF
        self._pushed_since_signal += len(items)
        # 2.7.8.2: entries (and buffer contents) before the idx update.
        uv = self._uv
        if uv is not None:
            store_u16(uv, 2, new)
        else:
            areas.pack(DEVICE, 2, _U16, new)

    def _write_used(self, areas: RingAreas, items: Sequence[tuple[DescriptorChain, int]]) -> None:
        """One used entry per buffer from ``next_used`` (wrapping), not yet published."""
        used, mask, uv = self._next_used, self._mask, self._uv
        if uv is None:
            for chain, written in items:
                areas.pack(DEVICE, 4 + 8 * (used & mask), _USED_ELEM, chain.head, written)
                used += 1
            return
        pack_into = _USED_ELEM.pack_into
        for chain, written in items:
            pack_into(uv, 4 + 8 * (used & mask), chain.head, written)
            used += 1

    def _write_in_order(
        self, areas: RingAreas, items: Sequence[tuple[DescriptorChain, int]]
    ) -> None:
        """IN_ORDER (2.7.9): one used entry per batch, at the batch's first slot, carrying
        the last buffer's id; a batch ends at a buffer not written in full, since skipped
        buffers count as completely used."""
        inflight = self._inflight
        for chain, _ in items:
            if not inflight or inflight.popleft() is not chain:
                raise ValueError("VIRTIO_F_IN_ORDER: buffers must be used in avail order")
        slot = self._next_used
        last = len(items) - 1
        for i, (chain, written) in enumerate(items):
            if i == last or written != chain.writable_len:
                areas.pack(DEVICE, 4 + 8 * (slot & self._mask), _USED_ELEM, chain.head, written)
                slot = self._next_used + i + 1

    # -- notifications --------------------------------------------------------------------
    def needs_notify(self, mem: GuestMemory) -> bool:
        areas = self._bind(mem)
        new, old = self._next_used, self._signalled_used
        valid = self._signalled_valid and self._pushed_since_signal < 0x10000
        self._signalled_used, self._signalled_valid = new, True
        self._pushed_since_signal = 0
        if self._event_idx:  # 2.7.7.2
            (used_event,) = areas.unpack(DRIVER, self._used_event_off, _U16)
            return not valid or need_event(used_event, new, old)
        (flags,) = areas.unpack(DRIVER, 0, _U16)
        return (not valid or new != old) and not flags & S.VIRTQ_AVAIL_F_NO_INTERRUPT

    def enable_notification(self, mem: GuestMemory) -> bool:
        areas = self._bind(mem)
        self._notify_enabled = True
        if self._event_idx:  # 2.7.10.2: ask for a kick once avail idx passes ours
            areas.pack(DEVICE, self._avail_event_off, _U16, self._next_avail)
        else:
            areas.pack(DEVICE, 0, _U16, 0)
        (avail_idx,) = areas.unpack(DRIVER, 2, _U16)
        return avail_idx != self._next_avail

    def disable_notification(self, mem: GuestMemory) -> None:
        areas = self._bind(mem)
        self._notify_enabled = False
        if not self._event_idx:  # with EVENT_IDX flags stay 0; avail_event is left behind
            areas.pack(DEVICE, 0, _U16, S.VIRTQ_USED_F_NO_NOTIFY)
