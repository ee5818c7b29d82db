"""Waiting for DMA memory: requests take buffers as they are made and give them back as
they complete; when none fits, a request waits (asyncio) until one is freed."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from xenvirtio.nbd.backend import BlockIOError
from xenvirtio.transport.dma import DmaBuffer, DmaExhaustedError, DmaMemory


class DmaWaiter:
    """`alloc` waits for room; `free` wakes the waiters. ``bind`` returns the event loop
    (and raises if the driver may no longer be used)."""

    def __init__(self, dma: DmaMemory, bind: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self._dma = dma
        self._bind = bind
        self._waiters: list[asyncio.Future[None]] = []

    async def alloc(self, size: int, align: int = 64) -> DmaBuffer:
        if size > self._dma.capacity:
            raise BlockIOError(errno.ENOMEM, f"{size} bytes exceed the DMA memory")
        while True:
            try:
                return self._dma.alloc(size, align)
            except DmaExhaustedError:
                waiter = self._bind().create_future()
                self._waiters.append(waiter)
                await waiter

    def free(self, buf: DmaBuffer) -> None:
        self._dma.free(buf)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
