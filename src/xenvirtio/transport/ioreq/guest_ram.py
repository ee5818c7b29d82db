"""`ForeignGuestRam`: an HVM guest's RAM as a privileged device model reaches it, through
foreign mappings made on demand (QEMU's xen "mapcache").

Virtqueue addresses in a PV-on-HVM guest are guest-physical. dom0 maps the frames they
fall in with ``xenforeignmemory_map``, one bucket of ``bucket_pages`` frames at a time,
the first time anything in the bucket is touched, and keeps the mapping. Frames past the
guest's RAM, or ones the hypervisor refuses, are a `GuestMemoryError`, never a crash; a
refused bucket is remembered so a hostile guest cannot make every access a hypercall.

``IOREQ_TYPE_INVALIDATE`` (Xen broadcasts it when the guest's p2m shrank, e.g. after
ballooning) calls `invalidate`: buckets nothing has a view of are unmapped and mapped
again when next used. A bucket a view was handed out from (a virtqueue keeps views of its
rings, an I/O engine its buffers) stays *locked*, as QEMU keeps locked mapcache
entries, until `close`. A lock serialises the mapcache: engines call ``views`` from
their worker threads. Give each instance its own `ForeignMemory` handle.
"""

from __future__ import annotations

import threading

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.foreignmemory import PROT_READ, PROT_WRITE, ForeignMemory
from xenvirtio.hv.api.mapping import ForeignMapping
from xenvirtio.mem.api import Buffer, GuestMemoryError, check_range
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE

DEFAULT_BUCKET_PAGES = 256  # 1 MiB, QEMU's MCACHE_BUCKET_SHIFT on 64-bit hosts

_Piece = tuple[memoryview, int, int]  # bucket view, offset in it, length


class ForeignGuestRam:
    """Guest RAM ``[0, nr_pages * 4096)`` of ``domid``. Implements `GuestMemory`."""

    def __init__(
        self,
        foreign: ForeignMemory,
        domid: int,
        nr_pages: int,
        *,
        bucket_pages: int = DEFAULT_BUCKET_PAGES,
    ) -> None:
        if nr_pages <= 0 or bucket_pages <= 0:
            raise ValueError("guest RAM and buckets need at least one page")
        self.foreign = foreign
        self.domid = domid
        self.nr_pages = nr_pages
        self.bucket_size = bucket_pages * XEN_PAGE_SIZE
        self._buckets: dict[int, ForeignMapping] = {}
        self._locked: set[int] = set()
        self._refused: set[int] = set()
        self._lock = threading.Lock()
        self.maps = 0  # foreign map calls made (for tests and tracing)
        self.invalidations = 0

    @property
    def size(self) -> int:
        return self.nr_pages * XEN_PAGE_SIZE

    @property
    def writable(self) -> bool:
        return True

    # -- the mapcache ------------------------------------------------------------------
    def _bucket(self, index: int, gpa: int, size: int) -> memoryview:
        mapping = self._buckets.get(index)
        if mapping is not None:
            return mapping.memory
        if index in self._refused:
            raise GuestMemoryError(gpa, size, "the hypervisor refused to map these frames")
        first = index * self.bucket_size // XEN_PAGE_SIZE
        last = min(first + self.bucket_size // XEN_PAGE_SIZE, self.nr_pages)
        try:
            mapping = self.foreign.map(self.domid, PROT_READ | PROT_WRITE, range(first, last))
        except HypervisorError as err:
            self._refused.add(index)
            raise GuestMemoryError(gpa, size, f"foreign map failed: {err}") from err
        self.maps += 1
        self._buckets[index] = mapping
        return mapping.memory

    def _pieces(self, gpa: int, size: int, lock: bool = False) -> list[_Piece]:
        """Bucket pieces covering the range (every bucket mapped, and locked if
        ``lock``), or raise."""
        check_range(gpa, size)
        if gpa + size > self.size:
            raise GuestMemoryError(gpa, size, "outside the guest's RAM")
        with self._lock:
            pieces = self._map_range(gpa, size)
            if lock and pieces:
                first = gpa // self.bucket_size
                self._locked.update(range(first, first + len(pieces)))
        return pieces

    def _map_range(self, gpa: int, size: int) -> list[_Piece]:
        pieces: list[_Piece] = []
        pos, end = gpa, gpa + size
        while pos < end:
            index, off = divmod(pos, self.bucket_size)
            length = min(end - pos, self.bucket_size - off)
            pieces.append((self._bucket(index, gpa, size), off, length))
            pos += length
        return pieces

    def invalidate(self) -> int:
        """Unmap every bucket no view was taken from; returns how many were dropped."""
        with self._lock:
            self.invalidations += 1
            dropped = [i for i in self._buckets if i not in self._locked]
            for index in dropped:
                self._buckets.pop(index).unmap()
            self._refused.clear()  # the p2m changed: frames may map now
        return len(dropped)

    @property
    def mapped_buckets(self) -> int:
        return len(self._buckets)

    def close(self) -> None:
        with self._lock:
            for mapping in self._buckets.values():
                mapping.unmap()
            self._buckets.clear()
            self._locked.clear()

    # -- GuestMemory -------------------------------------------------------------------
    def check(self, gpa: int, size: int, write: bool = False) -> None:
        self._pieces(gpa, size)

    def read(self, gpa: int, size: int) -> bytes:
        return b"".join(bytes(view[off : off + n]) for view, off, n in self._pieces(gpa, size))

    def write(self, gpa: int, data: Buffer) -> None:
        src = memoryview(data).cast("B")
        pos = 0
        for view, off, n in self._pieces(gpa, len(src)):  # all mapped before any write
            view[off : off + n] = src[pos : pos + n]
            pos += n

    def view(self, gpa: int, size: int) -> memoryview:
        if size and gpa // self.bucket_size != (gpa + size - 1) // self.bucket_size:
            check_range(gpa, size)
            raise GuestMemoryError(gpa, size, "spans two mapcache buckets")
        pieces = self._pieces(gpa, size, lock=True)
        if not pieces:
            return memoryview(b"")
        view, off, n = pieces[0]
        return view[off : off + n]

    def views(self, gpa: int, size: int) -> list[memoryview]:
        pieces = self._pieces(gpa, size, lock=True)
        return [view[off : off + n] for view, off, n in pieces]
