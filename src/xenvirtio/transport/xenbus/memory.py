"""`FrameMemory`: guest-physical memory reached one 4 KiB frame at a time. Pure.

The ``grant-usage`` = 0 counterpart of `xenvirtio.mem.grant_dma.GrantDmaMemory`: a
privileged backend maps the frontend's frames by number (libxenforeignmemory), and a
frontend reaches its own DMA pages the same way. ``resolver(gfn)`` maps one frame (or
returns None / raises `GuestMemoryError` when it may not); mappings are cached until
`clear`. Grant-DMA addresses (bit 63) are not guest-physical and fault here.
"""

from __future__ import annotations

from collections.abc import Callable

from xenvirtio.mem.api import Buffer, GuestMemoryError, check_range
from xenvirtio.mem.grant_dma import XEN_GRANT_DMA_ADDR_OFF, XEN_PAGE_SHIFT, XEN_PAGE_SIZE

FrameResolver = Callable[[int], memoryview | None]


class FrameMemory:
    """Guest memory addressed by guest-physical address. Implements `GuestMemory`."""

    def __init__(self, resolver: FrameResolver) -> None:
        self._resolve = resolver
        self._cache: dict[int, memoryview] = {}

    @property
    def writable(self) -> bool:
        return True

    @property
    def mapped_frames(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        """Forget every mapping (views handed out die with the mappings)."""
        self._cache.clear()

    def _frame(self, gfn: int, gpa: int, size: int) -> memoryview:
        page = self._cache.get(gfn)
        if page is None:
            page = self._resolve(gfn)
            if page is None:
                raise GuestMemoryError(gpa, size, f"frame {gfn:#x} is not mapped")
            page = page.cast("B")
            if len(page) != XEN_PAGE_SIZE:
                raise GuestMemoryError(gpa, size, f"frame {gfn:#x} mapping is not one page")
            self._cache[gfn] = page
        return page

    def _pieces(self, gpa: int, size: int, write: bool) -> list[memoryview]:
        check_range(gpa, size)
        if size and (gpa | (gpa + size - 1)) & XEN_GRANT_DMA_ADDR_OFF:
            raise GuestMemoryError(gpa, size, "a grant-DMA address is not guest-physical")
        out: list[memoryview] = []
        pos, end = gpa, gpa + size
        while pos < end:
            off = pos & (XEN_PAGE_SIZE - 1)
            length = min(end - pos, XEN_PAGE_SIZE - off)
            page = self._frame(pos >> XEN_PAGE_SHIFT, gpa, size)
            if write and page.readonly:
                raise GuestMemoryError(gpa, size, f"frame {pos >> XEN_PAGE_SHIFT:#x} is read-only")
            out.append(page[off : off + length])
            pos += length
        return out

    def check(self, gpa: int, size: int, write: bool = False) -> None:
        self._pieces(gpa, size, write)

    def read(self, gpa: int, size: int) -> bytes:
        return b"".join(bytes(p) for p in self._pieces(gpa, size, False))

    def write(self, gpa: int, data: Buffer) -> None:
        src = memoryview(data).cast("B")
        pos = 0
        for piece in self._pieces(gpa, len(src), True):  # all resolved before writing
            piece[:] = src[pos : pos + len(piece)]
            pos += len(piece)

    def view(self, gpa: int, size: int) -> memoryview:
        pieces = self._pieces(gpa, size, False)
        if len(pieces) > 1:
            raise GuestMemoryError(gpa, size, "spans separately mapped frames")
        return pieces[0] if pieces else memoryview(b"")

    def views(self, gpa: int, size: int) -> list[memoryview]:
        return self._pieces(gpa, size, False)
