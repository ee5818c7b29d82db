"""A domain as the emulated hypervisor keeps it: RAM, grant table, frames, interrupts.

RAM is a memfd of ``memory_mb`` (sparse: pages cost memory once touched) and the grant
table another memfd of ``max_grant_frames`` pages, both mapped here and handed to the
domain and, page by page, to whoever may map them. Freed frames are punched out of
the memfd (``MADV_REMOVE``), so they read as zeros when reused and cost nothing.
"""

from __future__ import annotations

import errno
import heapq
import mmap
import os
from collections import deque
from dataclasses import dataclass, field

from xenvirtio.hv.api.domctl import DomainState
from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.guest import IrqEvent
from xenvirtio.hv.emu.granttable import GrantTable
from xenvirtio.hv.emu.pirqs import PirqTable
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE

DEFAULT_GRANT_FRAMES = 8  # 4096 v1 entries
MAX_IRQ_QUEUE = 4096


class FrameAllocator:
    """Free guest frames of one domain; lowest first, reserved frames excluded."""

    def __init__(self, nr_pages: int, reserved: set[int]) -> None:
        self.nr_pages = nr_pages
        self.reserved = set(reserved)
        self._free: list[int] = []
        self._next = 0
        self.in_use = 0

    def alloc(self, count: int) -> list[int]:
        frames: list[int] = []
        while len(frames) < count:
            if self._free:
                frames.append(heapq.heappop(self._free))
            elif self._next < self.nr_pages:
                if self._next not in self.reserved:
                    frames.append(self._next)
                self._next += 1
            else:
                self.free(frames)
                raise HypervisorError(errno.ENOMEM, "out of guest memory")
        self.in_use += len(frames)
        return frames

    def free(self, frames: list[int]) -> None:
        for frame in frames:
            heapq.heappush(self._free, frame)
        self.in_use -= len(frames)


def _memfd(name: str, size: int) -> tuple[int, mmap.mmap]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        return fd, mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    except BaseException:
        os.close(fd)
        raise


@dataclass
class Domain:
    domid: int
    name: str
    memory_mb: int
    vcpus: int
    type: str
    privileged: bool
    state: DomainState = DomainState.PAUSED
    kernel: str | None = None
    cmdline: str = ""
    exit_code: int | None = None
    pid: int | None = None
    pidfd: int | None = None
    store_gfn: int | None = None
    store_port: int | None = None
    ram_fd: int = -1
    ram: mmap.mmap | None = None
    gnttab_fd: int = -1
    gnttab_map: mmap.mmap | None = None
    grants: GrantTable | None = None
    frames: FrameAllocator | None = None
    irq_efd: int | None = None
    irqs: deque[IrqEvent] = field(default_factory=lambda: deque(maxlen=MAX_IRQ_QUEUE))
    pirqs: PirqTable = field(default_factory=PirqTable)
    start_waiters: list[int] = field(default_factory=list)  # connection ids

    @property
    def nr_pages(self) -> int:
        return self.memory_mb * 1024 * 1024 // XEN_PAGE_SIZE

    def build(self, grant_frames: int = DEFAULT_GRANT_FRAMES) -> None:
        """Make RAM and the grant table; the top frame is kept for the XenStore page."""
        self.ram_fd, self.ram = _memfd(f"dom{self.domid}-ram", self.nr_pages * XEN_PAGE_SIZE)
        self.gnttab_fd, self.gnttab_map = _memfd(
            f"dom{self.domid}-gnttab", grant_frames * XEN_PAGE_SIZE
        )
        self.grants = GrantTable(memoryview(self.gnttab_map), self.nr_pages)
        self.store_gfn = self.nr_pages - 1
        self.frames = FrameAllocator(self.nr_pages, {self.store_gfn})

    def table(self) -> GrantTable:
        if self.grants is None:
            raise HypervisorError(errno.ESRCH, f"domain {self.domid} is being destroyed")
        return self.grants

    def allocator(self) -> FrameAllocator:
        if self.frames is None:
            raise HypervisorError(errno.ESRCH, f"domain {self.domid} is being destroyed")
        return self.frames

    def memory(self) -> mmap.mmap:
        if self.ram is None:
            raise HypervisorError(errno.ESRCH, f"domain {self.domid} is being destroyed")
        return self.ram

    def discard_frames(self, frames: list[int]) -> None:
        """Give frames back to the host (they read as zeros afterwards)."""
        ram = self.memory()
        for frame in frames:
            ram.madvise(mmap.MADV_REMOVE, frame * XEN_PAGE_SIZE, XEN_PAGE_SIZE)

    def release(self) -> None:
        """Drop RAM, grant table and fds (mappings held elsewhere keep their pages)."""
        if self.grants is not None:
            self.grants.table.release()
            self.grants = None
        for region in (self.ram, self.gnttab_map):
            if region is not None:
                region.close()
        self.ram = self.gnttab_map = None
        self.frames = None
        for fd in (self.ram_fd, self.gnttab_fd, self.pidfd, self.irq_efd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.ram_fd = self.gnttab_fd = -1
        self.pidfd = self.irq_efd = None
