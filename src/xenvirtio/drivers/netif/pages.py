"""Granted pages of guest RAM: ring pages and packet buffers, granted to the backend
once and for the life of the queue (netfront re-grants per packet; keeping the grants
costs nothing here and the backend still reaches them only by grant copy)."""

from __future__ import annotations

import contextlib

from xenvirtio.hv.api import Guest
from xenvirtio.spec.netif import XEN_PAGE_SIZE


class GrantedPages:
    """``count`` pages of ``guest`` granted to ``backend_domid`` (read-only if asked)."""

    def __init__(self, guest: Guest, backend_domid: int, count: int, readonly: bool) -> None:
        self.guest = guest
        self.frames = guest.alloc_pages(count)
        table = guest.grant_table
        self.refs = table.alloc_grant_references(count)
        for ref, frame in zip(self.refs, self.frames, strict=True):
            table.grant_foreign_access_ref(ref, backend_domid, frame, readonly)
        ram = guest.memory
        self.views = [ram[f * XEN_PAGE_SIZE : (f + 1) * XEN_PAGE_SIZE] for f in self.frames]

    def close(self) -> None:
        """End the grants; pages still mapped by the backend are leaked, not reused."""
        table = self.guest.grant_table
        ended = True
        for ref in self.refs:
            try:
                table.end_foreign_access_ref(ref)
            except OSError:
                ended = False
        for view in self.views:
            with contextlib.suppress(BufferError):
                view.release()
        if ended:
            with contextlib.suppress(OSError):
                table.free_grant_references(self.refs)
                self.guest.free_pages(self.frames)
        self.views = []
