"""`GuestDmaPages`: a frontend's DMA memory, shared with its backend for the device's life.

The pages are taken from the domain's RAM once. With grant DMA each page is granted
(read-write) to the backend domain, as a kernel's ``gnttab_grant_foreign_access`` does,
and its DMA address is ``(1 << 63) | (gref << 12)``; without, the address is the
guest-physical one. Grants stay valid until `close` (persistent grants: the backend may
keep them mapped while it is connected, docs/xenbus-transport.md). Implements
`DmaPages`: ``memory`` is a `FlatMemory` with one region per arena, at its DMA address,
so a driver's pool (e.g. ``xenvirtio.transport.dma.DmaPool``) gets contiguous views.
"""

from __future__ import annotations

import contextlib
import logging

from xenvirtio.hv.api import Guest
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.grant_dma import XEN_PAGE_SHIFT, XEN_PAGE_SIZE, grant_dma_addr
from xenvirtio.transport.dma import Arena, arenas

log = logging.getLogger("xenvirtio.xenbus.virtio")


class GuestDmaPages:
    """``pages`` pages of ``guest`` for DMA with ``backend_domid``."""

    def __init__(self, guest: Guest, backend_domid: int, pages: int, grant_usage: bool) -> None:
        if pages < 1:
            raise ValueError("DMA memory needs at least one page")
        self.guest = guest
        self.backend_domid = backend_domid
        self.grant_usage = grant_usage
        self.frames = sorted(guest.alloc_pages(pages))
        self.refs: list[int] = []
        try:
            if grant_usage:
                self._grant()
        except BaseException:
            self.close()
            raise
        if grant_usage:
            addrs = [grant_dma_addr(ref) for ref in self.refs]
        else:
            addrs = [frame << XEN_PAGE_SHIFT for frame in self.frames]
        self._arenas = arenas(list(zip(addrs, self.frames, strict=True)))
        self._memory = FlatMemory()
        ram = guest.memory
        for arena in self._arenas:
            start = arena.frame * XEN_PAGE_SIZE
            self._memory.add_region(arena.base, ram[start : start + arena.size])

    def _grant(self) -> None:
        table = self.guest.grant_table
        self.refs = sorted(table.alloc_grant_references(len(self.frames)))
        for ref, frame in zip(self.refs, self.frames, strict=True):
            table.grant_foreign_access_ref(ref, self.backend_domid, frame, False)

    @property
    def memory(self) -> FlatMemory:
        return self._memory

    @property
    def arenas(self) -> list[Arena]:
        return list(self._arenas)

    @property
    def pages(self) -> int:
        return len(self.frames)

    def close(self) -> bool:
        """End the grants and give the pages back; False if the backend still maps some
        (those pages are leaked rather than reused while a peer can write them)."""
        table = self.guest.grant_table
        busy: list[int] = []
        for ref in self.refs:
            try:
                table.end_foreign_access(ref)
            except OSError:
                busy.append(ref)
        if busy:
            log.warning("grants %s still mapped by domain %d", busy, self.backend_domid)
        self.refs = []
        if not busy:
            with contextlib.suppress(OSError):
                self.guest.free_pages(self.frames)
        self.frames = []
        return not busy
