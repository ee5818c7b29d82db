"""Waiting for DMA memory: requests take buffers as they are made and give them back as
they complete; when none fits, a request waits (asyncio) until one is freed.

Freed buffers are kept for reuse by the next request of the same size (a first-fit
allocation per request costs more than the request's own bookkeeping) while any buffer
is out; once all are back, or when memory runs short, the kept ones return to the pool,
so an idle driver holds nothing beyond its rings."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from xenvirtio.nbd.backend import BlockIOError
from xenvirtio.transport.dma import DmaBuffer, DmaExhaustedError, DmaMemory

KEEP_PER_SIZE = 64  # freed buffers kept per (size, alignment)


class DmaWaiter:
    """`alloc` waits for room; `free` wakes the waiters. ``bind`` returns the event loop
    (and raises if the driver may no longer be used)."""

    def __init__(self, dma: DmaMemory, bind: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self._dma = dma
        self._bind = bind
        self._waiters: list[asyncio.Future[None]] = []
        self._kept: dict[tuple[int, int], list[DmaBuffer]] = {}
        self._align: dict[int, int] = {}  # addr -> alignment of each buffer out
        self._out = 0

    async def alloc(self, size: int, align: int = 64) -> DmaBuffer:
        if size > self._dma.capacity:
            raise BlockIOError(errno.ENOMEM, f"{size} bytes exceed the DMA memory")
        while True:
            buf = self.try_alloc(size, align)
            if buf is not None:
                return buf
            waiter = self._bind().create_future()
            self._waiters.append(waiter)
            await waiter

    def try_alloc(self, size: int, align: int = 64) -> DmaBuffer | None:
        """A buffer now, or None when the memory is exhausted."""
        kept = self._kept.get((size, align))
        if kept:
            buf = kept.pop()
        else:
            try:
                buf = self._dma.alloc(size, align)
            except DmaExhaustedError:
                if not self._kept:
                    return None
                self.release_kept()  # make room from what is kept, then try once more
                try:
                    buf = self._dma.alloc(size, align)
                except DmaExhaustedError:
                    return None
        self._align[buf.addr] = align
        self._out += 1
        return buf

    def free(self, buf: DmaBuffer) -> None:
        align = self._align.pop(buf.addr)
        self._out -= 1
        kept = self._kept.setdefault((buf.size, align), [])
        if self._waiters or len(kept) >= KEEP_PER_SIZE:
            self._dma.free(buf)
        else:
            kept.append(buf)
        if not self._out:
            self.release_kept()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def release_kept(self) -> None:
        for kept in self._kept.values():
            for buf in kept:
                self._dma.free(buf)
        self._kept.clear()
