"""DMA memory, between a transport and the guest drivers above it. Pure.

A guest driver puts rings, request headers, status bytes and data bounce buffers only in
memory its backend can reach, and hands the backend *DMA addresses*: guest-physical
addresses for a privileged backend, grant-DMA addresses (``1 << 63 | gref << 12``) for an
unprivileged one (Linux ``grant-dma-ops.c``). Two ports hide which:

- `DmaPages`, what every transport offers as ``transport.dma``: ``memory`` reaches the
  pages by DMA address, ``arenas`` are the ranges contiguous in both DMA address and
  guest frame (a buffer inside one has contiguous DMA addresses and one view). A XenBus
  frontend's are the pages it shared with its backend; a virtio-pci or virtio-mmio
  driver's is the `DmaWindow` of guest RAM the guest OS gave it.
- `DmaMemory`, what a driver allocates from: ``alloc`` hands out ``(dma_addr, size,
  view)`` buffers. `DmaPool` is a first-fit allocator over one arena;
  ``DmaPool.for_transport(transport)`` takes the largest.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.grant_dma import XEN_PAGE_SHIFT, XEN_PAGE_SIZE

# ------------------------------------------------------------------ what a transport offers


class Arena(NamedTuple):
    """``pages`` pages at DMA address ``base``, guest frames ``frame ..``."""

    base: int
    frame: int
    pages: int

    @property
    def size(self) -> int:
        return self.pages * XEN_PAGE_SIZE


class DmaPages(Protocol):
    """What a transport gives a driver for DMA: ``memory`` reaches the pages by DMA
    address; ``arenas`` are the contiguous ranges a driver's allocator may use."""

    @property
    def memory(self) -> GuestMemory: ...

    @property
    def arenas(self) -> Sequence[Arena]: ...


class NoDmaMemoryError(LookupError):
    """The transport was given no DMA memory (the guest OS did not say where it is)."""


class HasDma(Protocol):
    """Anything offering DMA pages as ``dma`` (every `VirtioTransport`)."""

    @property
    def dma(self) -> DmaPages: ...


class DmaWindow:
    """``size`` bytes of ``memory`` at guest-physical ``base`` as one arena (DMA address
    = guest-physical address, a privileged backend's view). Implements `DmaPages`."""

    def __init__(self, memory: GuestMemory, base: int, size: int) -> None:
        if base % XEN_PAGE_SIZE or size % XEN_PAGE_SIZE or size <= 0:
            raise ValueError("a DMA window is a positive number of whole pages")
        self._memory = memory
        self._arena = Arena(base, base >> XEN_PAGE_SHIFT, size // XEN_PAGE_SIZE)

    @property
    def memory(self) -> GuestMemory:
        return self._memory

    @property
    def arenas(self) -> list[Arena]:
        return [self._arena]


def arenas(pages: Sequence[tuple[int, int]]) -> list[Arena]:
    """Group ``(dma address, frame)`` pairs into arenas, by DMA address."""
    out: list[Arena] = []
    for addr, frame in sorted(pages):
        if addr % XEN_PAGE_SIZE:
            raise ValueError(f"page address {addr:#x} is not page aligned")
        last = out[-1] if out else None
        if last and last.base + last.size == addr and last.frame + last.pages == frame:
            out[-1] = last._replace(pages=last.pages + 1)
        else:
            out.append(Arena(addr, frame, 1))
    return out


def largest(found: Sequence[Arena]) -> Arena:
    """The biggest arena (first of equals): where a single-pool driver allocates."""
    if not found:
        raise ValueError("no DMA pages")
    return max(found, key=lambda a: (a.pages, -a.base))


# ------------------------------------------------------------------ what a driver uses


class DmaExhaustedError(Exception):
    """No free range large enough right now (buffers come back as requests complete)."""


class DmaBuffer(NamedTuple):
    """``size`` bytes at DMA address ``addr``; ``view`` aliases them (driver side)."""

    addr: int
    size: int
    view: memoryview


class DmaMemory(Protocol):
    """Where a driver allocates what the device must reach."""

    @property
    def memory(self) -> GuestMemory:
        """The driver's access to its buffers, addressed by DMA address."""
        ...

    @property
    def capacity(self) -> int:
        """Total bytes this memory can ever hand out at once."""
        ...

    def alloc(self, size: int, align: int = 64) -> DmaBuffer:
        """A zero-copy buffer; raises `DmaExhaustedError` when none fits now."""
        ...

    def free(self, buf: DmaBuffer) -> None: ...


class DmaPool:
    """First-fit allocation from ``[base, base + size)`` of ``memory``, which must give a
    contiguous view of every range inside it. Implements `DmaMemory`."""

    def __init__(self, memory: GuestMemory, base: int, size: int) -> None:
        if size <= 0:
            raise ValueError("pool size must be positive")
        memory.view(base, size)  # fail early if the range is not one contiguous mapping
        self._memory = memory
        self.base, self.size = base, size
        self._starts: list[int] = [base]  # free extents, sorted by start
        self._lengths: dict[int, int] = {base: size}
        self._used: dict[int, int] = {}
        self.in_use = 0

    @classmethod
    def for_transport(cls, transport: HasDma) -> DmaPool:
        """A pool over the largest arena of the DMA memory ``transport`` offers: what a
        driver allocates from when nobody hands it another `DmaMemory`."""
        arena = largest(transport.dma.arenas)
        return cls(transport.dma.memory, arena.base, arena.size)

    @property
    def memory(self) -> GuestMemory:
        return self._memory

    @property
    def capacity(self) -> int:
        return self.size

    def alloc(self, size: int, align: int = 64) -> DmaBuffer:
        if size <= 0 or align <= 0 or align & (align - 1):
            raise ValueError("size must be positive and align a power of two")
        for start in self._starts:
            length = self._lengths[start]
            addr = (start + align - 1) & ~(align - 1)
            if addr + size <= start + length:
                self._take(start, length, addr, size)
                return DmaBuffer(addr, size, self._memory.view(addr, size))
        raise DmaExhaustedError(f"no free {size}-byte DMA range ({self.size - self.in_use} free)")

    def _take(self, start: int, length: int, addr: int, size: int) -> None:
        i = bisect.bisect_left(self._starts, start)
        del self._starts[i]
        del self._lengths[start]
        for lo, hi in ((start, addr), (addr + size, start + length)):  # the leftovers
            if hi > lo:
                bisect.insort(self._starts, lo)
                self._lengths[lo] = hi - lo
        self._used[addr] = size
        self.in_use += size

    def free(self, buf: DmaBuffer) -> None:
        size = self._used.pop(buf.addr, None)
        if size is None:
            raise ValueError(f"{buf.addr:#x} is not an allocated DMA buffer")
        self.in_use -= size
        start, end = buf.addr, buf.addr + size
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] == end:  # merge with the next extent
            end += self._lengths.pop(end)
            del self._starts[i]
        if i and self._starts[i - 1] + self._lengths[self._starts[i - 1]] == start:
            prev = self._starts[i - 1]  # merge with the previous extent
            self._lengths[prev] = end - prev
            return
        self._starts.insert(i, start)
        self._lengths[start] = end - start
