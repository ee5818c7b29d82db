"""Packed virtqueue, device side (virtio 1.2 2.8). The driver side is `packed_driver`.

The guest is hostile. A descriptor's flags are loaded first (they publish it), then its
other fields, each once; only the copies are used. A descriptor counts as available only
when VIRTQ_DESC_F_AVAIL matches the device's view of the driver's wrap counter and
VIRTQ_DESC_F_USED does not (2.8.1); AVAIL and USED both matching at the next position is
impossible for a driver that follows the protocol (`PackedRingError`). Walks are bounded:
a chain by Queue Size, an indirect table by its entry count (at most Queue Size), and the
descriptors outstanding by Queue Size, so a driver that republishes slots the device has
not used yet is caught. Buffers are checked against guest memory at pop time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from xenvirtio.mem.api import GPA_LIMIT, GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.packed_ring import (
    BODY_ST,
    DESC_ST,
    EVENT_ST,
    F_INDIRECT,
    F_NEXT,
    F_WRITE,
    FLAGS_OFF,
    LEN_OFF,
    MAX_CHAIN_BYTES,
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
    ChainLengthOverflowError,
    ChainTooLongError,
    DescriptorAddressError,
    DescriptorChain,
    DescriptorOrderError,
    IndirectTableError,
    InvalidHeadError,
    NestedIndirectError,
    PackedRingError,
    QueueConfig,
)
from xenvirtio.virtio.rings import DESC, DEVICE, DRIVER, RingAreas, store_u16

_Desc = tuple[int, int, int, int]  # addr, len, id, flags


def _check_buffer(mem: GuestMemory, addr: int, length: int, write: int) -> None:
    if addr + length > GPA_LIMIT:
        raise DescriptorAddressError(f"buffer [{addr:#x}, +{length:#x}) overflows 64 bits")
    try:
        mem.check(addr, length, bool(write))
    except GuestMemoryError as err:
        raise DescriptorAddressError(f"buffer not accessible: {err}", err) from err


def _build(mem: GuestMemory, head: int, descs: Sequence[_Desc], count: int) -> DescriptorChain:
    """Validate the elements of one buffer into a chain: readable before writable
    (2.8.17), at most 2**32 bytes, every element mapped (and writable if written)."""
    readable: list[tuple[int, int]] = []
    writable: list[tuple[int, int]] = []
    rlen = wlen = 0
    for addr, length, _, flags in descs:
        if flags & F_WRITE:
            writable.append((addr, length))
            wlen += length
        elif writable:
            raise DescriptorOrderError("device-readable descriptor after a writable one")
        else:
            readable.append((addr, length))
            rlen += length
    if rlen + wlen > MAX_CHAIN_BYTES:
        raise ChainLengthOverflowError("buffer longer than 2**32 bytes")
    for addr, length in readable:
        _check_buffer(mem, addr, length, 0)
    for addr, length in writable:
        _check_buffer(mem, addr, length, 1)
    return DescriptorChain(head, tuple(readable), tuple(writable), rlen, wlen, count)


class PackedDeviceQueue:
    """Device side of a packed virtqueue. See `xenvirtio.virtio.queue.DeviceQueue`.

    ``next_avail`` / ``next_used`` are ring positions: offset | wrap counter << 15.
    """

    def __init__(self, cfg: QueueConfig) -> None:
        check_packed_config(cfg)
        self.config = cfg
        self._size = cfg.size
        self._event_idx = cfg.event_idx
        self._indirect = cfg.indirect_desc
        self._in_order = cfg.in_order
        self._areas: RingAreas | None = None
        self.reset()

    # -- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        if self._areas is not None:
            self._areas.release()
        self._areas = None
        self._dv: memoryview | None = None  # zero-copy descriptor ring, when mem allows
        self.next_avail = START
        self.next_used = START
        self._outstanding = 0  # ring descriptors popped and not yet used
        self._inflight: dict[int, DescriptorChain] = {}  # buffer id -> chain
        self._order: deque[DescriptorChain] = deque()  # IN_ORDER: pop order
        self._moved = 0  # descriptors used since the last needs_notify

    def _bind(self, mem: GuestMemory) -> RingAreas:
        cfg = self.config
        areas = self._areas = RingAreas(
            mem,
            (cfg.desc_addr, cfg.driver_addr, cfg.device_addr),
            ring_sizes(self._size),
            (True, False, True),  # the driver event area is read-only to us (2.8)
        )
        self._dv = None if areas.views is None else areas.views[DESC]
        return areas

    def _areas_for(self, mem: GuestMemory) -> RingAreas:
        areas = self._areas
        if areas is None or areas.mem is not mem:
            areas = self._bind(mem)
        return areas

    # -- available buffers ----------------------------------------------------------------
    def pop(self, mem: GuestMemory) -> DescriptorChain | None:
        areas = self._areas
        if areas is None or areas.mem is not mem:
            areas = self._bind(mem)
        dv, pos = self._dv, self.next_avail
        off = (pos & OFF_MASK) << 4
        if dv is not None:
            (flags,) = U16_ST.unpack_from(dv, off + FLAGS_OFF)
        else:
            (flags,) = areas.unpack(DESC, off + FLAGS_OFF, U16_ST)
        wrap = pos >> 15
        if (flags >> 7 & 1) != wrap:
            return None  # not made available in this lap yet
        if (flags >> 15 & 1) == wrap:  # 2.8.1: AVAIL == USED marks a used descriptor
            raise PackedRingError(f"descriptor at {pos & OFF_MASK} is marked used ahead of us")
        if dv is not None:
            addr, length, bid = BODY_ST.unpack_from(dv, off)
        else:
            addr, length, bid = areas.unpack(DESC, off, BODY_ST)
        if flags & (F_NEXT | F_INDIRECT):
            return self._pop_list(mem, areas, pos, (addr, length, bid, flags))
        # The common case: one direct descriptor.
        inflight = self._inflight
        if self._outstanding >= self._size or bid >= self._size or bid in inflight:
            self._check_id(bid, 1)
        write = flags & F_WRITE
        _check_buffer(mem, addr, length, write)
        if write:
            chain = DescriptorChain(bid, (), ((addr, length),), 0, length, 1)
        else:
            chain = DescriptorChain(bid, ((addr, length),), (), length, 0, 1)
        inflight[bid] = chain
        if self._in_order:
            self._order.append(chain)
        self._outstanding += 1
        off = (pos & OFF_MASK) + 1
        self.next_avail = pos + 1 if off < self._size else (pos & WRAP) ^ WRAP
        return chain

    def _check_id(self, bid: int, count: int) -> None:
        if self._outstanding + count > self._size:
            raise PackedRingError("driver made more than Queue Size descriptors available")
        if bid >= self._size or bid in self._inflight:
            raise InvalidHeadError(f"buffer id {bid} out of range or already in use")

    def _accept(self, chain: DescriptorChain, pos: int, count: int) -> None:
        self._inflight[chain.head] = chain
        if self._in_order:
            self._order.append(chain)
        self._outstanding += count
        self.next_avail = advance(pos, count, self._size)

    def _pop_list(
        self, mem: GuestMemory, areas: RingAreas, pos: int, first: _Desc
    ) -> DescriptorChain:
        """A buffer of several descriptors, or of one indirect descriptor."""
        descs = self._read_list(areas, pos, first)
        count = len(descs)
        bid = descs[-1][2]  # 2.8.6: the buffer id is in the last descriptor of a list
        self._check_id(bid, count)
        addr, length, _, flags = first
        if flags & F_INDIRECT:
            chain = _build(mem, bid, self._read_indirect(mem, addr, length), 1)
        else:
            chain = _build(mem, bid, descs, count)
        self._accept(chain, pos, count)
        return chain

    def pop_batch(self, mem: GuestMemory, max_chains: int) -> list[DescriptorChain]:
        chains: list[DescriptorChain] = []
        pop = self.pop
        while len(chains) < max_chains:
            chain = pop(mem)
            if chain is None:
                break
            chains.append(chain)
        return chains

    def _read_list(self, areas: RingAreas, pos: int, first: _Desc) -> list[_Desc]:
        """Copy a descriptor list linked by VIRTQ_DESC_F_NEXT (2.8.6): every element must
        be available in its own lap (the driver publishes the first one last)."""
        size, dv = self._size, self._dv
        descs = [first]
        flags = first[3]
        while flags & F_NEXT:
            if len(descs) >= size:  # 2.8.18: no list longer than Queue Size
                raise ChainTooLongError(f"descriptor list longer than {size}")
            pos = pos + 1 if (pos & OFF_MASK) + 1 < size else (pos & WRAP) ^ WRAP
            off = (pos & OFF_MASK) << 4
            if dv is not None:
                addr, length, bid, flags = DESC_ST.unpack_from(dv, off)
            else:
                addr, length, bid, flags = areas.unpack(DESC, off, DESC_ST)
            wrap = pos >> 15
            if (flags >> 7 & 1) != wrap or (flags >> 15 & 1) == wrap:
                raise PackedRingError(f"list element at {pos & OFF_MASK} is not available")
            descs.append((addr, length, bid, flags))
        if len(descs) > 1 and any(d[3] & F_INDIRECT for d in descs):
            # 2.8.19: no INDIRECT descriptor within a list linked by NEXT
            raise IndirectTableError("VIRTQ_DESC_F_INDIRECT in a VIRTQ_DESC_F_NEXT list")
        return descs

    def _read_indirect(self, mem: GuestMemory, addr: int, length: int) -> list[_Desc]:
        """Copy an indirect table in a single read (2.8.7); only WRITE counts in it."""
        if not self._indirect:
            raise IndirectTableError("VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC")
        if length == 0 or length % S.PVIRTQ_DESC_SIZE:
            raise IndirectTableError(f"indirect table length {length} is not n*16, n > 0")
        entries = length // S.PVIRTQ_DESC_SIZE
        if entries > self._size:  # 2.8.5: unless the device says otherwise, Queue Size
            raise ChainTooLongError(f"indirect table of {entries} > Queue Size entries")
        _check_buffer(mem, addr, length, 0)
        try:
            table = mem.read(addr, length)
        except GuestMemoryError as err:
            raise DescriptorAddressError(f"indirect table: {err}", err) from err
        descs = list(DESC_ST.iter_unpack(table))
        if any(d[3] & F_INDIRECT for d in descs):
            raise NestedIndirectError("indirect descriptor inside an indirect table")
        return descs

    # -- used buffers ---------------------------------------------------------------------
    def _retire(self, chain: DescriptorChain, written: int) -> None:
        if not 0 <= written <= chain.writable_len:
            raise ValueError(f"written {written} outside [0, {chain.writable_len}]")
        if self._inflight.get(chain.head) is not chain:
            raise ValueError(f"buffer id {chain.head} is not outstanding")
        if self._in_order:
            if self._order[0] is not chain:
                raise ValueError("VIRTIO_F_IN_ORDER: buffers must be used in avail order")
            self._order.popleft()
        del self._inflight[chain.head]

    def _write_used(self, areas: RingAreas, bid: int, written: int, count: int) -> None:
        """One used descriptor at ``next_used`` (2.8.1: AVAIL and USED both equal to the
        device wrap counter; 2.8.3: WRITE when bytes were written), then skip ``count``.
        The flags publish it, so they are stored last (a separate store)."""
        pos = self.next_used
        off = (pos & OFF_MASK) << 4
        flags = (0x8080 if pos & WRAP else 0) | (F_WRITE if written else 0)
        dv = self._dv
        if dv is not None:
            USED_ST.pack_into(dv, off + LEN_OFF, written, bid)
            store_u16(dv, off + FLAGS_OFF, flags)
        else:
            areas.pack(DESC, off + LEN_OFF, USED_ST, written, bid)
            areas.pack(DESC, off + FLAGS_OFF, U16_ST, flags)
        self.next_used = advance(pos, count, self._size)
        self._outstanding -= count
        self._moved += count

    def push_used(self, mem: GuestMemory, chain: DescriptorChain, written: int) -> None:
        areas = self._areas_for(mem)
        self._retire(chain, written)
        self._write_used(areas, chain.head, written, chain.desc_count)

    def push_used_batch(
        self, mem: GuestMemory, items: Sequence[tuple[DescriptorChain, int]]
    ) -> None:
        if not items:
            return
        areas = self._areas_for(mem)
        if not self._in_order:
            for chain, written in items:
                self._retire(chain, written)
                self._write_used(areas, chain.head, written, chain.desc_count)
            return
        # IN_ORDER (2.8.8): one used descriptor, with the last buffer's id, per batch; a
        # batch ends at a buffer not written in full (skipped ones count as fully used).
        order = self._order
        for i, (chain, _) in enumerate(items):  # all checked first: no half-used batch
            if i >= len(order) or order[i] is not chain:
                raise ValueError("VIRTIO_F_IN_ORDER: buffers must be used in avail order")
        skipped = 0
        last = len(items) - 1
        for i, (chain, written) in enumerate(items):
            self._retire(chain, written)
            skipped += chain.desc_count
            if i == last or written != chain.writable_len:
                self._write_used(areas, chain.head, written, skipped)
                skipped = 0

    # -- notifications --------------------------------------------------------------------
    def needs_notify(self, mem: GuestMemory) -> bool:
        moved, self._moved = self._moved, 0
        if not moved:
            return False
        off_wrap, flags = self._areas_for(mem).unpack(DRIVER, 0, EVENT_ST)
        return event_wanted(off_wrap, flags, self._event_idx, self.next_used, moved, self._size)

    def enable_notification(self, mem: GuestMemory) -> bool:
        areas = self._areas_for(mem)
        if self._event_idx:  # 2.8.14: an event once the next descriptor is made available
            areas.pack(DEVICE, 0, EVENT_ST, self.next_avail, S.RING_EVENT_FLAGS_DESC)
        else:
            areas.pack(DEVICE, 2, U16_ST, S.RING_EVENT_FLAGS_ENABLE)
        pos = self.next_avail
        (flags,) = areas.unpack(DESC, 16 * (pos & OFF_MASK) + FLAGS_OFF, U16_ST)
        return (flags >> 7 & 1) == pos >> 15

    def disable_notification(self, mem: GuestMemory) -> None:
        self._areas_for(mem).pack(DEVICE, 2, U16_ST, S.RING_EVENT_FLAGS_DISABLE)
