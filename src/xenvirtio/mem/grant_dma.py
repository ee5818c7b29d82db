"""Xen grant-DMA addresses and `GrantDmaMemory`, guest memory reached through grants.

A Xen guest using grant DMA for virtio (Linux ``drivers/xen/grant-dma-ops.c``) does not
put guest-physical addresses in descriptors. It grants each page to the backend domain and
uses ``(1 << 63) | (gref << 12) | offset`` as the DMA address; a multi-page buffer gets
consecutive grant references, so the addresses of its pages are consecutive too.

`GrantDmaMemory` turns such addresses back into memory by asking a resolver to map one
grant (``gref -> memoryview`` of 4096 bytes, read-only if granted read-only), caching the
mappings. Addresses without bit 63 are guest-physical: they go to the ``foreign``
memory (a privileged backend's foreign mapping) if one is given, else they fault. So the
same queue code serves both kinds of backend.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from xenvirtio.mem.api import Buffer, GuestMemory, GuestMemoryError, check_range

XEN_PAGE_SHIFT = 12
XEN_PAGE_SIZE = 1 << XEN_PAGE_SHIFT
XEN_GRANT_DMA_ADDR_OFF = 1 << 63
GREF_LIMIT = 1 << 32  # grant_ref_t is uint32_t

GrantResolver = Callable[[int], memoryview | None]


class AddressKind(Enum):
    GUEST_PHYSICAL = "guest-physical"
    GRANT_DMA = "grant-dma"


def grant_dma_addr(gref: int, offset: int = 0) -> int:
    """The DMA address of byte ``offset`` of the buffer starting at grant ``gref``."""
    if not 0 <= gref < GREF_LIMIT or offset < 0:
        raise ValueError(f"bad grant reference {gref} or offset {offset}")
    return XEN_GRANT_DMA_ADDR_OFF | (gref << XEN_PAGE_SHIFT) + offset


def translate(addr: int) -> tuple[AddressKind, int, int]:
    """``(kind, frame, offset)``: the grant reference (grant DMA) or the guest frame
    number (guest-physical) holding ``addr``, and the offset within that page."""
    offset = addr & (XEN_PAGE_SIZE - 1)
    if addr & XEN_GRANT_DMA_ADDR_OFF:
        return AddressKind.GRANT_DMA, (addr & ~XEN_GRANT_DMA_ADDR_OFF) >> XEN_PAGE_SHIFT, offset
    return AddressKind.GUEST_PHYSICAL, addr >> XEN_PAGE_SHIFT, offset


class GrantDmaMemory:
    """Guest memory addressed by grant-DMA addresses. Implements `GuestMemory`.

    ``resolver(gref)`` maps one granted page or returns None (or raises
    `GuestMemoryError`) when the grant is not valid for us. Mappings are cached until
    `invalidate`/`clear`; views handed out alias the mapping and die with it.
    """

    def __init__(self, resolver: GrantResolver, foreign: GuestMemory | None = None) -> None:
        self._resolve = resolver
        self._foreign = foreign
        self._cache: dict[int, memoryview] = {}

    @property
    def writable(self) -> bool:
        return True

    def invalidate(self, gref: int) -> None:
        """Forget one mapping (the guest ended or changed its grant)."""
        self._cache.pop(gref, None)

    def clear(self) -> None:
        self._cache.clear()

    def _page(self, gref: int, gpa: int, size: int) -> memoryview:
        page = self._cache.get(gref)
        if page is None:
            if gref >= GREF_LIMIT:
                raise GuestMemoryError(gpa, size, f"grant reference {gref} out of range")
            page = self._resolve(gref)
            if page is None:
                raise GuestMemoryError(gpa, size, f"grant {gref} is not mapped")
            page = page.cast("B")
            if len(page) != XEN_PAGE_SIZE:
                raise GuestMemoryError(gpa, size, f"grant {gref} mapping is not one page")
            self._cache[gref] = page
        return page

    def _pieces(self, gpa: int, size: int, write: bool) -> list[memoryview]:
        """One view per page of a grant-DMA range (all resolved before returning)."""
        check_range(gpa, size)  # also keeps the range inside the grant-DMA window
        out: list[memoryview] = []
        pos, end = gpa, gpa + size
        while pos < end:
            _, gref, off = translate(pos)
            length = min(end - pos, XEN_PAGE_SIZE - off)
            page = self._page(gref, gpa, size)
            if write and page.readonly:
                raise GuestMemoryError(gpa, size, f"grant {gref} is read-only")
            out.append(page[off : off + length])
            pos += length
        return out

    def _route(self, gpa: int, size: int) -> GuestMemory | None:
        """The foreign memory for a guest-physical address, None for grant DMA (and for
        empty ranges, which touch nothing)."""
        if size == 0 or (gpa >= 0 and gpa & XEN_GRANT_DMA_ADDR_OFF):
            return None
        if self._foreign is None:
            raise GuestMemoryError(gpa, 0, "guest-physical address without a foreign mapping")
        return self._foreign

    def check(self, gpa: int, size: int, write: bool = False) -> None:
        foreign = self._route(gpa, size)
        if foreign is not None:
            foreign.check(gpa, size, write)
        else:
            self._pieces(gpa, size, write)

    def read(self, gpa: int, size: int) -> bytes:
        foreign = self._route(gpa, size)
        if foreign is not None:
            return foreign.read(gpa, size)
        return b"".join(bytes(p) for p in self._pieces(gpa, size, False))

    def write(self, gpa: int, data: Buffer) -> None:
        src = memoryview(data).cast("B")
        foreign = self._route(gpa, len(src))
        if foreign is not None:
            foreign.write(gpa, src)
            return
        pos = 0
        for piece in self._pieces(gpa, len(src), True):
            piece[:] = src[pos : pos + len(piece)]
            pos += len(piece)

    def view(self, gpa: int, size: int) -> memoryview:
        foreign = self._route(gpa, size)
        if foreign is not None:
            return foreign.view(gpa, size)
        pieces = self._pieces(gpa, size, False)
        if len(pieces) > 1:
            raise GuestMemoryError(gpa, size, "spans separately mapped grants")
        return pieces[0] if pieces else memoryview(b"")

    def views(self, gpa: int, size: int) -> list[memoryview]:
        foreign = self._route(gpa, size)
        if foreign is not None:
            return foreign.views(gpa, size)
        return self._pieces(gpa, size, False)
