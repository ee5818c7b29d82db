"""blkfront's data pages: taken from guest RAM once, granted to the backend.

With persistent grants every page is granted once, at start, and stays granted while the
device lives (``feature-persistent``: the backend keeps them mapped). Without, a page is
granted when a request takes it and the grant is ended when the response came back.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from xenvirtio.hv.api import Guest
from xenvirtio.spec.blkif import XEN_PAGE_SIZE


@dataclass
class DataPage:
    frame: int
    gref: int
    view: memoryview


class DataPages:
    """``count`` pages of ``guest`` for I/O with ``backend_domid``."""

    def __init__(self, guest: Guest, backend_domid: int, count: int) -> None:
        self.guest = guest
        self.backend_domid = backend_domid
        frames = guest.alloc_pages(count)
        refs = guest.grant_table.alloc_grant_references(count)
        ram = guest.memory
        self.pages = [
            DataPage(f, r, ram[f * XEN_PAGE_SIZE : (f + 1) * XEN_PAGE_SIZE])
            for f, r in zip(frames, refs, strict=True)
        ]
        self.free = list(self.pages)
        self.persistent = False
        self._waiters: list[asyncio.Future[None]] = []

    def make_persistent(self) -> None:
        """Grant every page now, for the life of the device."""
        if not self.persistent:
            for page in self.pages:
                self._grant(page)
            self.persistent = True

    def _grant(self, page: DataPage) -> None:
        self.guest.grant_table.grant_foreign_access_ref(
            page.gref, self.backend_domid, page.frame, False
        )

    async def take(self, n: int) -> list[DataPage]:
        while len(self.free) < n:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        taken, self.free = self.free[:n], self.free[n:]
        if not self.persistent:
            for page in taken:
                self._grant(page)
        return taken

    def give(self, pages: list[DataPage]) -> None:
        if not self.persistent:
            for page in pages:
                self.guest.grant_table.end_foreign_access_ref(page.gref)
        self.free.extend(pages)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """End every grant and free the pages; a page the backend still maps is leaked
        rather than reused (ending its grant is refused while it is mapped)."""
        table = self.guest.grant_table
        released = []
        idle = {id(page) for page in self.free}
        for page in self.pages:
            try:
                if self.persistent or id(page) not in idle:
                    table.end_foreign_access_ref(page.gref)
            except OSError:
                continue
            released.append(page)
        with contextlib.suppress(OSError):
            table.free_grant_references([p.gref for p in released])
            self.guest.free_pages([p.frame for p in released])
        self.pages = self.free = []
