"""Access to a queue's three ring areas in guest memory, with a zero-copy fast path.

`RingAreas.bind(mem, ...)` checks that each area is mapped (and writable where this side
writes) and, when the memory can give one contiguous view per area, keeps those views so
ring fields are read and written through them directly. Otherwise every access goes
through ``mem.read``/``mem.write``. Either way guest memory faults surface as
`RingAccessError`.

Also `need_event`, the EVENT_IDX decision both sides and both formats share, and
`store_u16`, how a field the other side may be reading right now is published.
"""

from __future__ import annotations

import struct
import sys

from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.virtio.queue import RingAccessError

DESC, DRIVER, DEVICE = 0, 1, 2


def need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """True when ``event_idx`` lies in ``[old_idx, new_idx)`` modulo 2**16: the other
    side asked to be notified once the index moves past ``event_idx``
    (virtio 1.2 2.7.7.2 / 2.7.10.1, Linux ``vring_need_event``)."""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old_idx) & 0xFFFF


def store_u16(view: memoryview, offset: int, value: int) -> None:
    """Write the little-endian u16 at ``offset`` of ``view`` with one 16-bit store.

    The peer may read the field at any moment (an index, an event field, packed
    descriptor flags), from another process. ``struct.pack_into`` zero-fills the field
    before writing it, so a concurrent reader could see 0: an avail or used idx that
    jumped by thousands, flags that look used. A native store of an aligned u16 is one
    instruction, as the ring's fields are in C (virtio 1.2 2.7 fields are aligned)."""
    if sys.byteorder != "little":
        value = ((value & 0xFF) << 8) | (value >> 8 & 0xFF)
    view[offset : offset + 2].cast("H")[0] = value


class RingAreas:
    """The descriptor, driver and device areas of one queue in one guest memory."""

    __slots__ = ("bases", "mem", "sizes", "views")

    def __init__(
        self,
        mem: GuestMemory,
        bases: tuple[int, int, int],
        sizes: tuple[int, int, int],
        writes: tuple[bool, bool, bool],
    ) -> None:
        self.mem = mem
        self.bases = bases
        self.sizes = sizes
        views: list[memoryview] = []
        for base, size, write in zip(bases, sizes, writes, strict=True):
            try:
                mem.check(base, size, write=write)
            except GuestMemoryError as err:
                raise RingAccessError(f"ring area not accessible: {err}") from err
            try:
                views.append(mem.view(base, size))
            except GuestMemoryError:
                break  # mapped but not contiguous in the host: use the slow path
        self.views: tuple[memoryview, ...] | None = tuple(views) if len(views) == 3 else None

    def unpack(self, area: int, offset: int, st: struct.Struct) -> tuple[int, ...]:
        """Copy and decode ``st`` at ``offset`` within ``area``."""
        views = self.views
        if views is not None:
            return st.unpack_from(views[area], offset)
        return st.unpack(self.read(area, offset, st.size))

    def pack(self, area: int, offset: int, st: struct.Struct, *values: int) -> None:
        """Encode ``values`` at ``offset``; a u16 with one store (`store_u16`), anything
        else with one copy (never zero-filled first, as ``pack_into`` would)."""
        views = self.views
        if views is not None:
            if st.size == 2:
                store_u16(views[area], offset, values[0])
            else:
                views[area][offset : offset + st.size] = st.pack(*values)
        else:
            self.write(area, offset, st.pack(*values))

    def read(self, area: int, offset: int, size: int) -> bytes:
        views = self.views
        if views is not None:
            return bytes(views[area][offset : offset + size])
        try:
            return self.mem.read(self.bases[area] + offset, size)
        except GuestMemoryError as err:
            raise RingAccessError(str(err)) from err

    def write(self, area: int, offset: int, data: bytes) -> None:
        views = self.views
        if views is not None:
            views[area][offset : offset + len(data)] = data
            return
        try:
            self.mem.write(self.bases[area] + offset, data)
        except GuestMemoryError as err:
            raise RingAccessError(str(err)) from err

    def zero(self) -> None:
        """Zero all three areas (a driver initialising its rings)."""
        for area, size in enumerate(self.sizes):
            self.write(area, 0, bytes(size))

    def release(self) -> None:
        """Drop the cached views (so the mapping can be closed)."""
        self.views = None
