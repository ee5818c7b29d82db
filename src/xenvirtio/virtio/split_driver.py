"""Split virtqueue, driver side (virtio 1.2 2.7.13, 2.7.14).

Buffers go in with a token and come back by it (as Linux's ``virtqueue_add_*`` /
``virtqueue_get_buf``). The driver keeps its own record of every chain it exposed and
never reads its descriptors back, so a device that scribbles on the descriptor table
cannot confuse it; used entries are checked against that record (`InvalidUsedError`),
and the first `VirtqueueError` latches `broken`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from xenvirtio.mem.api import GPA_LIMIT, GuestMemory
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.layout import IndirectPool, buffer_elements
from xenvirtio.virtio.queue import (
    InvalidUsedError,
    QueueBrokenError,
    QueueConfig,
    QueueConfigError,
    QueueFullError,
    VirtqueueError,
)
from xenvirtio.virtio.rings import DESC, DEVICE, DRIVER, RingAreas, need_event, store_u16

T = TypeVar("T")

_DESC = S.VIRTQ_DESC
_U16 = S.VIRTQ_U16
_USED_ELEM = S.VIRTQ_USED_ELEM
_NEXT = S.VIRTQ_DESC_F_NEXT
_WRITE = S.VIRTQ_DESC_F_WRITE
_INDIRECT = S.VIRTQ_DESC_F_INDIRECT
# Kept per head: descriptor count, the descriptors of a chain of more than one, device-
# writable bytes, indirect table address or -1.
_Record = tuple[int, tuple[int, ...], int, int]


def check_split_config(cfg: QueueConfig) -> None:
    """Queue Size is a power of 2 up to 32768 (2.7) and each area is aligned (2.7.1)."""
    size = cfg.size
    if not 1 <= size <= S.VIRTQ_MAX_SIZE or size & (size - 1):
        raise QueueConfigError(f"split Queue Size {size} is not a power of 2 <= 32768")
    areas = (
        ("descriptor table", cfg.desc_addr, S.VIRTQ_DESC_ALIGN, 16 * size),
        ("avail ring", cfg.driver_addr, S.VIRTQ_AVAIL_ALIGN, 6 + 2 * size),
        ("used ring", cfg.device_addr, S.VIRTQ_USED_ALIGN, 6 + 8 * size),
    )
    for name, addr, align, length in areas:
        if addr < 0 or addr % align or addr + length > GPA_LIMIT:
            raise QueueConfigError(f"{name} at {addr:#x} is misaligned or out of range")


class SplitDriverQueue(Generic[T]):
    """Driver side of a split virtqueue. See `xenvirtio.virtio.queue.DriverQueue`."""

    def __init__(self, cfg: QueueConfig, indirect: IndirectPool | None = None) -> None:
        check_split_config(cfg)
        self.config = cfg
        self._size = cfg.size
        self._mask = cfg.size - 1
        self._event_idx = cfg.event_idx
        self._in_order = cfg.in_order
        self._pool = indirect if cfg.indirect_desc else None
        self._used_event_off = 4 + 2 * cfg.size
        self._avail_event_off = 4 + 8 * cfg.size
        self._reset_state()

    def _reset_state(self) -> None:
        size = self._size
        self._free = list(range(size - 1, -1, -1))  # stack; IN_ORDER uses _next_desc
        self._next_desc = 0
        self._num_free = size
        # Per head, while outstanding: token, ring descriptors (0: not outstanding), the
        # descriptor indices of a chain of more than one, device-writable bytes, and the
        # indirect table address or -1. Never read back from the ring.
        self._tokens: list[T | None] = [None] * size
        self._ndescs = [0] * size
        self._descs: list[tuple[int, ...]] = [()] * size
        self._wlen = [0] * size
        self._table = [-1] * size
        self._order: deque[int] = deque()  # IN_ORDER: heads in avail order
        self._batch: tuple[int, int] | None = None  # IN_ORDER: (last id, its len)
        self._outstanding = 0
        self._avail_idx = self._kicked_idx = self._last_used = 0
        self._added_since_kick = 0
        self._cb_disabled = False
        self._broken = False
        self._areas: RingAreas | None = None
        # Zero-copy views of the descriptor table, avail ring and used ring, when the
        # memory gives contiguous ones; None: every access goes through `RingAreas`.
        self._dv: memoryview | None = None
        self._av: memoryview | None = None
        self._uv: memoryview | None = None
        if self._pool is not None:
            self._pool.reset()

    @property
    def num_free(self) -> int:
        return self._num_free

    @property
    def broken(self) -> bool:
        return self._broken

    def _bind(self, mem: GuestMemory) -> RingAreas:
        areas = self._areas
        if areas is None or areas.mem is not mem:
            cfg, size = self.config, self._size
            areas = self._areas = RingAreas(
                mem,
                (cfg.desc_addr, cfg.driver_addr, cfg.device_addr),
                (16 * size, 6 + 2 * size, 6 + 8 * size),
                (True, True, True),  # the used ring too: the driver zeroes it (2.7.10.1)
            )
            views = areas.views
            self._dv, self._av, self._uv = (None, None, None) if views is None else views
        return areas

    def _check(self) -> None:
        if self._broken:
            raise QueueBrokenError("virtqueue is broken; reset it")

    def init_rings(self, mem: GuestMemory) -> None:
        self._bind(mem).zero()

    # -- adding buffers ---------------------------------------------------------------------
    def add(
        self,
        mem: GuestMemory,
        readable: Sequence[tuple[int, int]],
        writable: Sequence[tuple[int, int]],
        token: T,
    ) -> None:
        self._check()
        if len(readable) + len(writable) != 1:
            self._add_chain(mem, buffer_elements(readable, writable), token)
            return
        # The common case: one element, one descriptor.
        addr, length = readable[0] if readable else writable[0]
        if addr < 0 or not 0 <= length < 1 << 32 or addr + length > GPA_LIMIT:
            raise ValueError(f"bad element [{addr:#x}, +{length:#x})")
        areas = self._areas
        if areas is None or areas.mem is not mem:
            areas = self._bind(mem)
        if not self._num_free:
            raise QueueFullError(f"1 descriptors needed, {self._num_free} free")
        if self._in_order:  # 2.7.5: descriptors in ring order
            head = self._next_desc
            self._next_desc = (head + 1) & self._mask
        else:
            head = self._free.pop()
        self._num_free -= 1
        flags = 0 if readable else _WRITE
        dv = self._dv
        if dv is not None:
            _DESC.pack_into(dv, head << 4, addr, length, flags, 0)
        else:
            areas.pack(DESC, head << 4, _DESC, addr, length, flags, 0)
        self._expose(areas, head, token, (1, (), 0 if readable else length, -1))

    def _add_chain(self, mem: GuestMemory, segs: list[tuple[int, int, int]], token: T) -> None:
        if len(segs) > self._size:  # 2.7.5.3.1, with or without an indirect table
            raise ValueError(f"{len(segs)} elements exceed Queue Size {self._size}")
        areas = self._bind(mem)
        table = -1
        pool = self._pool
        if pool is not None and 1 < len(segs) <= pool.slot_descs:
            got = pool.alloc()
            table = -1 if got is None else got
        needed = 1 if table >= 0 else len(segs)
        if needed > self._num_free:
            if table >= 0 and pool is not None:
                pool.free(table)
            raise QueueFullError(f"{needed} descriptors needed, {self._num_free} free")
        if table >= 0:
            try:
                mem.write(table, self._encode_table(segs))
            except BaseException:
                if pool is not None:
                    pool.free(table)
                raise
            descs = self._alloc(1)
            areas.pack(DESC, 16 * descs[0], _DESC, table, 16 * len(segs), _INDIRECT, 0)
        else:
            descs = self._alloc(needed)
            self._write_chain(areas, descs, segs)
        wlen = sum(n for _, n, f in segs if f)
        self._expose(areas, descs[0], token, (len(descs), descs, wlen, table))

    def _expose(self, areas: RingAreas, head: int, token: T, record: _Record) -> None:
        """Record the chain at ``head``, then publish it: the ring entry first, then the
        idx that exposes it (2.7.13.2-3)."""
        self._tokens[head] = token
        self._ndescs[head], self._descs[head], self._wlen[head], self._table[head] = record
        if self._in_order:
            self._order.append(head)
        self._outstanding += 1
        slot = 4 + 2 * (self._avail_idx & self._mask)
        self._avail_idx = idx = (self._avail_idx + 1) & 0xFFFF
        self._added_since_kick += 1
        av = self._av
        if av is not None:
            _U16.pack_into(av, slot, head)  # not visible before idx moves past it
            store_u16(av, 2, idx)
        else:
            areas.pack(DRIVER, slot, _U16, head)
            areas.pack(DRIVER, 2, _U16, idx)

    @staticmethod
    def _encode_table(segs: list[tuple[int, int, int]]) -> bytes:
        last = len(segs) - 1
        return b"".join(
            _DESC.pack(addr, length, flags | (_NEXT if i < last else 0), i + 1 if i < last else 0)
            for i, (addr, length, flags) in enumerate(segs)
        )

    def _alloc(self, count: int) -> tuple[int, ...]:
        self._num_free -= count
        if self._in_order:  # 2.7.5: descriptors in ring order, wrapping at the end
            first = self._next_desc
            self._next_desc = (first + count) & self._mask
            return tuple((first + i) & self._mask for i in range(count))
        free = self._free
        got = free[-count:]  # the top of the stack, popped in order
        del free[-count:]
        got.reverse()
        return tuple(got)

    def _write_chain(
        self, areas: RingAreas, descs: tuple[int, ...], segs: list[tuple[int, int, int]]
    ) -> None:
        last, dv = len(segs) - 1, self._dv
        for i, (addr, length, flags) in enumerate(segs):
            desc = (
                (addr, length, flags | _NEXT, descs[i + 1])
                if i < last
                else (addr, length, flags, 0)
            )
            if dv is not None:
                _DESC.pack_into(dv, descs[i] << 4, *desc)
            else:
                areas.pack(DESC, descs[i] << 4, _DESC, *desc)

    def kick_prepare(self, mem: GuestMemory) -> bool:
        self._check()
        areas = self._bind(mem)
        new, old = self._avail_idx, self._kicked_idx
        added, self._added_since_kick = self._added_since_kick, 0
        self._kicked_idx = new
        if not added:
            return False
        if self._event_idx:  # 2.7.10.1
            (avail_event,) = areas.unpack(DEVICE, self._avail_event_off, _U16)
            return added >= 0x10000 or need_event(avail_event, new, old)
        (flags,) = areas.unpack(DEVICE, 0, _U16)
        return not flags & S.VIRTQ_USED_F_NO_NOTIFY

    def notification_data(self) -> int:
        """virtio 1.2 2.9: vq index, then next_off (15 bits) and next_wrap = avail idx."""
        return self.config.index | self._avail_idx << 16

    # -- used buffers -----------------------------------------------------------------------
    def get_used(self, mem: GuestMemory) -> tuple[T, int] | None:
        items = self.get_used_batch(mem, 1)
        return items[0] if items else None

    def get_used_batch(self, mem: GuestMemory, max_items: int) -> list[tuple[T, int]]:
        self._check()
        areas = self._bind(mem)
        uv = self._uv
        try:
            if uv is not None and not self._in_order:
                out = self._collect(uv, max_items)
            else:
                out = []
                while len(out) < max_items:
                    item = self._next_used(areas)
                    if item is None:
                        break
                    out.append(item)
        except VirtqueueError:
            self._broken = True
            raise
        if out and self._event_idx and not self._cb_disabled:
            av = self._av
            if av is not None:
                store_u16(av, self._used_event_off, self._last_used)
            else:
                areas.pack(DRIVER, self._used_event_off, _U16, self._last_used)
        return out

    def _collect(self, uv: memoryview, max_items: int) -> list[tuple[T, int]]:
        """Used entries from ``last_used`` (not IN_ORDER, zero-copy ring): one used idx
        load per run of entries, each entry loaded once and checked by `_complete`."""
        out: list[tuple[T, int]] = []
        mask, complete, unpack = self._mask, self._complete, _USED_ELEM.unpack_from
        while len(out) < max_items:
            (used_idx,) = _U16.unpack_from(uv, 2)
            last = self._last_used
            pending = (used_idx - last) & 0xFFFF
            if pending == 0:
                break
            if pending > self._outstanding:
                raise InvalidUsedError(f"used idx {used_idx} is {pending} ahead, not outstanding")
            for pos in range(last, last + min(pending, max_items - len(out))):
                out.append(complete(*unpack(uv, 4 + 8 * (pos & mask))))
        return out

    def _next_used(self, areas: RingAreas) -> tuple[T, int] | None:
        if self._batch is not None:
            return self._take_batch()
        (used_idx,) = areas.unpack(DEVICE, 2, _U16)
        pending = (used_idx - self._last_used) & 0xFFFF
        if pending == 0:
            return None
        if pending > self._outstanding:
            raise InvalidUsedError(f"used idx {used_idx} is {pending} ahead, not outstanding")
        pos = 4 + 8 * (self._last_used & self._mask)
        used_id, length = areas.unpack(DEVICE, pos, _USED_ELEM)
        if self._in_order and (not self._order or used_id != self._order[0]):
            self._start_batch(used_id, length, pending)
            return self._take_batch()
        if self._in_order:
            self._order.popleft()
        return self._complete(used_id, length)

    def _start_batch(self, used_id: int, length: int, pending: int) -> None:
        """IN_ORDER (2.7.9): one used entry stands for every buffer up to ``used_id``."""
        for k, head in enumerate(self._order):
            if k >= pending:
                break
            if head == used_id:
                self._batch = (used_id, length)
                return
        raise InvalidUsedError(f"in-order used id {used_id} is not among the next {pending}")

    def _take_batch(self) -> tuple[T, int]:
        assert self._batch is not None
        last_id, last_len = self._batch
        head = self._order.popleft()
        if head == last_id:
            self._batch = None
            return self._complete(head, last_len)
        return self._complete(head, self._wlen[head])  # skipped buffers were used completely

    def _complete(self, used_id: int, length: int) -> tuple[T, int]:
        if not 0 <= used_id < self._size or not (count := self._ndescs[used_id]):
            raise InvalidUsedError(f"used id {used_id} is not an outstanding head")
        if length > self._wlen[used_id]:
            raise InvalidUsedError(f"used len {length} > {self._wlen[used_id]} writable bytes")
        token = self._tokens[used_id]
        self._tokens[used_id] = None
        self._ndescs[used_id] = 0
        if self._in_order:
            pass  # descriptors are reused in ring order (_next_desc)
        elif count == 1:
            self._free.append(used_id)
        else:
            self._free.extend(self._descs[used_id])
        self._num_free += count
        table = self._table[used_id]
        if table >= 0 and self._pool is not None:
            self._pool.free(table)
        self._outstanding -= 1
        self._last_used = (self._last_used + 1) & 0xFFFF
        return token, length  # type: ignore[return-value]

    # -- callbacks and reset ----------------------------------------------------------------
    def enable_cb(self, mem: GuestMemory) -> bool:
        self._check()
        areas = self._bind(mem)
        self._cb_disabled = False
        if self._event_idx:  # 2.7.7.1: notify once used idx passes last_used
            areas.pack(DRIVER, self._used_event_off, _U16, self._last_used)
        else:
            areas.pack(DRIVER, 0, _U16, 0)
        (used_idx,) = areas.unpack(DEVICE, 2, _U16)
        return used_idx != self._last_used or self._batch is not None

    def disable_cb(self, mem: GuestMemory) -> None:
        self._check()
        areas = self._bind(mem)
        self._cb_disabled = True
        if self._event_idx:  # flags MUST stay 0; park used_event just behind us
            areas.pack(DRIVER, self._used_event_off, _U16, (self._last_used - 1) & 0xFFFF)
        else:
            areas.pack(DRIVER, 0, _U16, S.VIRTQ_AVAIL_F_NO_INTERRUPT)

    def detach_unused(self) -> list[T]:
        heads = self._order if self._in_order else range(self._size)
        tokens = [self._tokens[h] for h in heads if self._ndescs[h]]
        self._reset_state()
        return tokens  # type: ignore[return-value]
