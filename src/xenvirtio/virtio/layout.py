"""Ring memory layout: sizes and alignments of the virtqueue areas (virtio 1.2 2.7, 2.8),
and the pool of guest memory a driver uses for indirect descriptor tables.

Re-exported by `xenvirtio.virtio.queue`; a ring format is named by a string-valued
`RingFormat` there, here only by a ``packed`` flag to keep this module dependency-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from xenvirtio.mem.api import GPA_LIMIT
from xenvirtio.spec import virtio as S


class IndirectPool:
    """Guest memory a driver owns for indirect descriptor tables.

    ``count`` slots of ``slot_descs`` descriptors each, starting at ``base`` (16-aligned).
    Pure bookkeeping: the queue writes the tables into guest memory itself.
    """

    def __init__(self, base: int, slot_descs: int, count: int) -> None:
        if base % S.VIRTQ_DESC_ALIGN or slot_descs < 1 or count < 1:
            raise ValueError("indirect pool needs a 16-aligned base and positive sizes")
        self.base = base
        self.slot_descs = slot_descs
        self.count = count
        self._free = list(range(count - 1, -1, -1))

    @staticmethod
    def bytes_needed(slot_descs: int, count: int) -> int:
        return slot_descs * count * S.VIRTQ_DESC_SIZE

    def alloc(self) -> int | None:
        """The guest address of a free table, or None when all are in use."""
        if not self._free:
            return None
        return self.base + self._free.pop() * self.slot_descs * S.VIRTQ_DESC_SIZE

    def free(self, gpa: int) -> None:
        slot, rem = divmod(gpa - self.base, self.slot_descs * S.VIRTQ_DESC_SIZE)
        if rem or not 0 <= slot < self.count:
            raise ValueError(f"{gpa:#x} is not a table of this pool")
        self._free.append(slot)

    def reset(self) -> None:
        self._free = list(range(self.count - 1, -1, -1))


class RingSizes(NamedTuple):
    """Bytes of the three ring areas: descriptors, driver area, device area."""

    desc: int
    driver: int
    device: int


class RingAddrs(NamedTuple):
    desc: int
    driver: int
    device: int
    end: int


def split_ring_sizes(size: int) -> RingSizes:
    """virtio 1.2 2.7: 16*size; 6 + 2*size (flags, idx, ring, used_event);
    6 + 8*size (flags, idx, ring, avail_event)."""
    return RingSizes(16 * size, 6 + 2 * size, 6 + 8 * size)


def packed_ring_sizes(size: int) -> RingSizes:
    """virtio 1.2 2.8: 16*size of descriptors and two 4-byte event suppression areas."""
    return RingSizes(16 * size, 4, 4)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def ring_addrs(packed: bool, base: int, size: int) -> RingAddrs:
    """Place a queue's three areas contiguously from ``base`` with their alignments
    (split: desc 16, avail 2, used 4; packed: desc 16, events 4)."""
    if packed:
        sizes = packed_ring_sizes(size)
        aligns = (S.VIRTQ_PACKED_DESC_ALIGN, S.VIRTQ_PACKED_EVENT_ALIGN, S.VIRTQ_PACKED_EVENT_ALIGN)
    else:
        sizes = split_ring_sizes(size)
        aligns = (S.VIRTQ_DESC_ALIGN, S.VIRTQ_AVAIL_ALIGN, S.VIRTQ_USED_ALIGN)
    desc = _align(base, aligns[0])
    driver = _align(desc + sizes.desc, aligns[1])
    device = _align(driver + sizes.driver, aligns[2])
    return RingAddrs(desc, driver, device, device + sizes.device)


MAX_BUFFER_BYTES = 1 << 32  # virtio 1.2 2.7.5.2: the sum of a buffer's lengths fits a le32


def buffer_elements(
    readable: Sequence[tuple[int, int]], writable: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """(addr, len, flags) for each element a driver adds, readable first, validated.

    Both ring formats use it; a bad element is the driver's own bug (ValueError), not a
    protocol error from the other side."""
    write = S.VIRTQ_DESC_F_WRITE
    out = [(a, n, 0) for a, n in readable] + [(a, n, write) for a, n in writable]
    if not out:
        raise ValueError("a buffer needs at least one element")
    total = 0
    for addr, length, _ in out:
        if addr < 0 or not 0 <= length < 1 << 32 or addr + length > GPA_LIMIT:
            raise ValueError(f"bad element [{addr:#x}, +{length:#x})")
        total += length
    if total > MAX_BUFFER_BYTES:
        raise ValueError("buffer longer than 2**32 bytes (virtio 1.2 2.7.5.2)")
    return out
