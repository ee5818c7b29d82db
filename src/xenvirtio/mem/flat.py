"""`FlatMemory`: guest memory backed by host buffers (bytearray, mmap, memfd mapping).

One or more regions, each a host buffer placed at a guest address. A range inside one
region is contiguous in the host (`view` works); a range spanning two adjacent regions
is readable and writable but only `views` can hand it out zero-copy.
"""

from __future__ import annotations

import bisect
import mmap
from dataclasses import dataclass

from xenvirtio.mem.api import Buffer, GuestMemoryError, check_range

HostBuffer = bytearray | mmap.mmap | memoryview


@dataclass(frozen=True, slots=True)
class Region:
    """``len(buf)`` bytes of host memory at guest address ``start``."""

    start: int
    end: int
    buf: memoryview
    readonly: bool


class FlatMemory:
    """Guest memory made of host buffers. Implements `GuestMemory`.

    ``FlatMemory(size)`` is one zeroed region at guest address ``base``;
    ``FlatMemory(buffer=mm)`` maps an existing buffer (shared memory across processes).
    `add_region` places more.
    """

    def __init__(
        self,
        size: int = 0,
        *,
        base: int = 0,
        buffer: HostBuffer | None = None,
        readonly: bool = False,
    ) -> None:
        self._regions: list[Region] = []
        self._starts: list[int] = []
        self._only: Region | None = None
        if buffer is None and size:
            buffer = bytearray(size)
        if buffer is not None:
            self.add_region(base, buffer, readonly=readonly)

    def add_region(self, base: int, buffer: HostBuffer, *, readonly: bool = False) -> Region:
        """Map ``buffer`` at guest address ``base``; regions must not overlap."""
        view = memoryview(buffer).cast("B")
        readonly = readonly or view.readonly
        if readonly:
            view = view.toreadonly()
        check_range(base, len(view))
        region = Region(base, base + len(view), view, readonly)
        i = bisect.bisect_right(self._starts, base)
        if (i and self._regions[i - 1].end > base) or (
            i < len(self._regions) and self._regions[i].start < region.end
        ):
            raise ValueError(f"region at {base:#x} overlaps another")
        self._regions.insert(i, region)
        self._starts.insert(i, base)
        self._only = self._regions[0] if len(self._regions) == 1 else None
        return region

    @property
    def regions(self) -> tuple[Region, ...]:
        return tuple(self._regions)

    @property
    def writable(self) -> bool:
        return any(not r.readonly for r in self._regions)

    def _pieces(self, gpa: int, size: int, write: bool) -> list[tuple[Region, int, int]]:
        """(region, offset, length) pieces covering the range, or raise."""
        check_range(gpa, size)
        out: list[tuple[Region, int, int]] = []
        i = bisect.bisect_right(self._starts, gpa) - 1
        pos, end = gpa, gpa + size
        while pos < end:
            if (
                i < 0
                or i >= len(self._regions)
                or not (self._regions[i].start <= pos < self._regions[i].end)
            ):
                raise GuestMemoryError(gpa, size, f"{pos:#x} is not mapped")
            region = self._regions[i]
            if write and region.readonly:
                raise GuestMemoryError(gpa, size, "read-only")
            length = min(end, region.end) - pos
            out.append((region, pos - region.start, length))
            pos += length
            i += 1
        return out

    def check(self, gpa: int, size: int, write: bool = False) -> None:
        r = self._only
        if (
            r is not None
            and r.start <= gpa
            and size >= 0
            and gpa + size <= r.end
            and not (write and r.readonly)
        ):
            return
        self._pieces(gpa, size, write)

    def read(self, gpa: int, size: int) -> bytes:
        r = self._only
        if r is not None and r.start <= gpa and size >= 0 and gpa + size <= r.end:
            off = gpa - r.start
            return bytes(r.buf[off : off + size])
        return b"".join(bytes(reg.buf[o : o + n]) for reg, o, n in self._pieces(gpa, size, False))

    def write(self, gpa: int, data: Buffer) -> None:
        src = memoryview(data).cast("B")
        pos = 0
        for region, off, n in self._pieces(gpa, len(src), True):  # validates all first
            region.buf[off : off + n] = src[pos : pos + n]
            pos += n

    def view(self, gpa: int, size: int) -> memoryview:
        pieces = self._pieces(gpa, size, False)
        if len(pieces) > 1:
            raise GuestMemoryError(gpa, size, "not contiguous in the host")
        if not pieces:
            return memoryview(b"")
        region, off, n = pieces[0]
        return region.buf[off : off + n]

    def views(self, gpa: int, size: int) -> list[memoryview]:
        return [reg.buf[o : o + n] for reg, o, n in self._pieces(gpa, size, False)]
