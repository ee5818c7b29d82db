"""`VirtioRngDriver`: the guest side of virtio-rng (virtio 1.2 5.4) over any
`VirtioTransport`.

Threads: construct it on the event loop it will use (it probes the device at once);
afterwards call it from that loop. ``interrupt()`` may be called from any thread.

Buffers are posted on demand: the bytes readers are waiting for, less what is already
received or in flight, in device-writable buffers of at most ``buffer_size`` in DMA
memory. The device may fill a buffer only partly (5.4.6.2); the driver takes exactly
the used length it reports (5.4.6.1: the driver MUST examine it), and asks again for what
is still missing. Bytes are handed out in the order the device used the buffers.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from collections import deque
from typing import Any, Final

from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_rng as R
from xenvirtio.transport.api import InterruptFlags, VirtioTransport
from xenvirtio.transport.dma import DmaBuffer, DmaExhaustedError, DmaMemory, DmaPool
from xenvirtio.transport.probe import attach_queue, kick, probe, queue_footprint
from xenvirtio.virtio.features import bit
from xenvirtio.virtio.queue import DriverQueue, QueueFullError, RingFormat, VirtqueueError

log = logging.getLogger(__name__)

DEFAULT_RING_FEATURES: Final = bit(S.VIRTIO_RING_F_EVENT_IDX) | bit(S.VIRTIO_F_RING_PACKED)
_REAP_BATCH = 64


class RngBrokenError(OSError):
    """The device broke the protocol or needs a reset; the driver stopped using it."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EIO, reason)


class VirtioRngDriver:
    """An entropy source inside the guest: ``await read(n)`` returns ``n`` random bytes,
    ``await read_some(n)`` between 1 and ``n`` (what one wait brought). ``dma`` defaults
    to ``DmaPool.for_transport(transport)``."""

    def __init__(
        self,
        transport: VirtioTransport,
        dma: DmaMemory | None = None,
        *,
        ring_features: int = DEFAULT_RING_FEATURES,
        queue_size: int = 64,
        buffer_size: int = 4096,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._transport = transport
        dma = dma if dma is not None else DmaPool.for_transport(transport)
        self._dma = dma
        self._mem = dma.memory
        self._queue_size = queue_size
        self.buffer_size = buffer_size
        self._queue: DriverQueue[DmaBuffer] | None = None
        self._ring: DmaBuffer | None = None
        self._pool = bytearray()
        self._waiters: deque[tuple[int, asyncio.Future[bytes]]] = deque()
        self._in_flight = 0  # bytes posted and not yet used
        self._service_scheduled = False
        self.broken: str | None = None
        self.received = 0
        wanted = bit(S.VIRTIO_F_VERSION_1) | bit(S.VIRTIO_F_ACCESS_PLATFORM) | ring_features
        self.features = probe(transport, wanted, self._setup)

    def _setup(self, features: int) -> None:
        """Probe step 7: lay out the request queue in DMA memory."""
        size = min(self._queue_size, self._transport.queue_max_size(R.REQUESTQ))
        if RingFormat.from_features(features) is RingFormat.SPLIT:
            size = 1 << (size.bit_length() - 1)
        self._ring = self._dma.alloc(queue_footprint(features, 0, size), 4096)
        self._queue = attach_queue(
            self._transport, self._mem, R.REQUESTQ, features, self._ring.addr, size
        )

    # ---------------------------------------------------------------- reading
    async def read(self, n: int) -> bytes:
        """Exactly ``n`` random bytes."""
        out = bytearray()
        while len(out) < n:
            out += await self.read_some(n - len(out))
        return bytes(out)

    async def read_some(self, n: int) -> bytes:
        """Between 1 and ``n`` random bytes, waiting for at least one (like a read of
        ``/dev/hwrng``). Raises `RngBrokenError` once the device failed."""
        if self.broken is not None:
            raise RngBrokenError(self.broken)
        if n <= 0:
            return b""
        if self._pool and not self._waiters:
            return self._take(n)
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters.append((n, waiter))
        self._refill()
        return await waiter

    def _take(self, n: int) -> bytes:
        data = bytes(self._pool[:n])
        del self._pool[:n]
        return data

    def _satisfy(self) -> None:
        while self._waiters and self._pool:
            n, waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled reader leaves its bytes for the next
                waiter.set_result(self._take(n))

    def _refill(self) -> None:
        """Post buffers for what waiting readers still miss; kick once."""
        queue = self._queue
        if queue is None or self.broken is not None:
            return
        demand = sum(n for n, w in self._waiters if not w.done())
        missing = demand - len(self._pool) - self._in_flight
        added = False
        while missing > 0:
            size = min(self.buffer_size, missing)
            try:
                buf = self._dma.alloc(size, 16)
            except DmaExhaustedError:
                break  # buffers come back as the device uses them
            try:
                queue.add(self._mem, [], [(buf.addr, size)], buf)
            except QueueFullError:
                self._dma.free(buf)
                break
            self._in_flight += size
            missing -= size
            added = True
        if added:
            kick(self._transport, queue, self._mem)

    # ---------------------------------------------------------------- interrupts
    def interrupt(self) -> None:
        """The device interrupted (any thread); the work runs on the loop."""
        if self._service_scheduled:
            return
        self._service_scheduled = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self.service)
        else:
            self._loop.call_soon_threadsafe(self.service)

    def service(self) -> None:
        """Acknowledge the interrupt, collect used buffers, wake readers (loop thread)."""
        self._service_scheduled = False
        flags = self._transport.ack_interrupt()
        if flags & InterruptFlags.CONFIG and (
            self._transport.get_status() & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
        ):
            self._fail("the device needs a reset")
            return
        try:
            self._reap()
        except VirtqueueError as err:
            self._fail(f"the device broke the request queue: {err}")
            return
        self._satisfy()
        self._refill()

    def _reap(self) -> None:
        queue = self._queue
        if queue is None:
            return
        while True:
            items = queue.get_used_batch(self._mem, _REAP_BATCH)
            for buf, written in items:
                self._pool += buf.view[:written]  # the queue checked written <= size
                self.received += written
                self._in_flight -= buf.size
                self._dma.free(buf)
            if not items and not queue.enable_cb(self._mem):
                return

    def _fail(self, reason: str) -> None:
        log.warning("virtio-rng: %s", reason)
        self.broken = reason
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RngBrokenError(reason))

    # ---------------------------------------------------------------- teardown
    def close(self) -> None:
        """Reset the device (it stops using our memory), fail waiting readers, and give
        the DMA memory back."""
        try:
            self._transport.reset()
        finally:
            if self.broken is None:
                self._fail("the driver was closed")
            self._release()

    def _release(self) -> None:
        queue: DriverQueue[Any] | None = self._queue
        if queue is not None:
            for buf in queue.detach_unused():
                self._dma.free(buf)
        if self._ring is not None:
            self._dma.free(self._ring)
        self._queue = self._ring = None
        self._in_flight = 0
