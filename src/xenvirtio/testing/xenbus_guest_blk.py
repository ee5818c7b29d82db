"""The virtio-blk requests of the XenBus test guest: Linux-like use of
`xenvirtio.drivers.blk.VirtioBlkDriver`, unchanged, over a `XenbusVirtioFrontend`.

The driver and its transport live on one asyncio loop, on a thread of their own; the
requests below are answered from the kernel's request loop by running coroutines there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from xenvirtio.drivers.blk.driver import DEFAULT_RING_FEATURES, VirtioBlkDriver
from xenvirtio.hv.api import Guest
from xenvirtio.spec import virtio as S
from xenvirtio.transport.xenbus.frontend import XenbusVirtioFrontend

R = TypeVar("R")


class BlkOps:
    """Mixed into the guest agent: ``op_blk_*`` requests."""

    guest: Guest

    def __init__(self) -> None:
        self.blk_loop: asyncio.AbstractEventLoop | None = None
        self.blk_thread: threading.Thread | None = None
        self.blk: VirtioBlkDriver | None = None
        self.blk_transport: XenbusVirtioFrontend | None = None
        self.blk_pending: list[Future[None]] = []

    def _run(self, coro: Coroutine[Any, Any, R], timeout: float = 30.0) -> R:
        assert self.blk_loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.blk_loop).result(timeout)

    def op_blk_attach(self, devid: int, packed: bool = False, dma_pages: int = 256) -> int:
        """Probe a virtio-blk disk; returns its size in bytes."""
        loop = self.blk_loop = asyncio.new_event_loop()
        self.blk_thread = threading.Thread(target=loop.run_forever, daemon=True)
        self.blk_thread.start()
        ring = DEFAULT_RING_FEATURES & ~(0 if packed else 1 << S.VIRTIO_F_RING_PACKED)

        async def attach() -> int:
            transport = XenbusVirtioFrontend(self.guest, devid, dma_pages=dma_pages)
            driver = VirtioBlkDriver(transport, ring_features=ring, queue_size=64)
            transport.on_interrupt = driver.interrupt
            transport.attach()
            self.blk, self.blk_transport = driver, transport
            return driver.size

        return self._run(attach())

    def _blk_driver(self) -> VirtioBlkDriver:
        if self.blk is None:
            raise RuntimeError("blk_attach first")
        return self.blk

    def op_blk_features(self) -> int:
        assert self.blk_transport is not None
        return self.blk_transport.negotiated

    def op_blk_write(self, offset: int, data: str, flush: bool = True) -> None:
        driver = self._blk_driver()

        async def write() -> None:
            await driver.write(offset, bytes.fromhex(data))
            if flush:
                await driver.flush()

        self._run(write())

    def op_blk_read(self, offset: int, length: int) -> str:
        return self._run(self._blk_driver().read(offset, length)).hex()

    def op_blk_submit(self, writes: list[list[Any]]) -> int:
        """Start writes ``[offset, hex]`` without waiting for them (they are in flight)."""
        driver = self._blk_driver()
        assert self.blk_loop is not None
        for offset, data in writes:
            coro = driver.write(int(offset), bytes.fromhex(data))
            self.blk_pending.append(asyncio.run_coroutine_threadsafe(coro, self.blk_loop))
        return len(self.blk_pending)

    def op_blk_collect(self, timeout: float = 20.0) -> int:
        """Wait for every submitted write, then flush; returns the driver's reconnects."""
        for future in self.blk_pending:
            future.result(timeout)
        self.blk_pending.clear()
        self._run(self._blk_driver().flush(), timeout)
        return self._blk_driver().reconnects

    def blk_close(self) -> None:
        loop, driver, transport = self.blk_loop, self.blk, self.blk_transport
        if loop is None:
            return

        async def close() -> None:
            if driver is not None:
                driver.close()
            if transport is not None:
                transport.close()

        try:
            self._run(close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self.blk_thread is not None:
                self.blk_thread.join(timeout=10)
            self.blk_loop = self.blk = self.blk_transport = None
