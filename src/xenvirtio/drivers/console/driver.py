"""`VirtioConsoleDriver`: the guest side of virtio-console (virtio 1.2 5.3), port 0,
over any `VirtioTransport`; it gives the code running inside the guest an asyncio
``reader`` / ``writer`` pair (see ``stream``).

Threads: construct it on the event loop it will use (it probes the device at once);
afterwards call it from that loop. ``interrupt()`` may be called from any thread.

Receive: ``rx_buffers`` device-writable buffers of ``rx_buffer_size`` bytes are posted
at set-up (5.3.5 step 4) and re-posted as soon as their bytes were handed to the reader,
unless the reader paused. Transmit: written bytes are copied into up to ``tx_buffers``
device-readable buffers of ``tx_buffer_size``; the rest waits in the driver (the
writer's ``drain`` pauses beyond the high-water mark). Size: with VIRTIO_CONSOLE_F_SIZE,
``size`` follows configuration change notifications (read under a stable generation).
A device that needs a reset, or breaks a queue, ends the stream with
`ConnectionResetError`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import Callable
from typing import Any, Final

from xenvirtio.drivers.console.stream import ConsoleTransport
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_console as C
from xenvirtio.transport.api import InterruptFlags, VirtioTransport
from xenvirtio.transport.dma import DmaBuffer, DmaMemory, DmaPool
from xenvirtio.transport.probe import attach_queue, kick, probe, queue_footprint
from xenvirtio.transport.probe import read_config_consistent as read_config
from xenvirtio.virtio.features import bit
from xenvirtio.virtio.queue import DriverQueue, RingFormat, VirtqueueError

log = logging.getLogger(__name__)

DEFAULT_RING_FEATURES: Final = bit(S.VIRTIO_RING_F_EVENT_IDX) | bit(S.VIRTIO_F_RING_PACKED)
CONSOLE_FEATURES: Final = bit(C.VIRTIO_CONSOLE_F_SIZE) | bit(C.VIRTIO_CONSOLE_F_EMERG_WRITE)
_REAP_BATCH = 64


def emergency_write(transport: VirtioTransport, data: bytes) -> None:
    """Write ``data`` a byte at a time to ``emerg_wr``: works before (or without) any
    set-up, e.g. on a panic path (5.3.5: the field can be written at any time), if the
    device offers VIRTIO_CONSOLE_F_EMERG_WRITE."""
    if not transport.get_features() >> C.VIRTIO_CONSOLE_F_EMERG_WRITE & 1:
        raise OSError("the device does not offer VIRTIO_CONSOLE_F_EMERG_WRITE")
    for byte in data:
        transport.write_config(C.VIRTIO_CONSOLE_CFG_EMERG_WR, struct.pack("<I", byte))


class VirtioConsoleDriver:
    """Port 0 of a virtio console. ``reader`` / ``writer`` are asyncio streams. ``dma``
    defaults to ``DmaPool.for_transport(transport)``."""

    def __init__(
        self,
        transport: VirtioTransport,
        dma: DmaMemory | None = None,
        *,
        ring_features: int = DEFAULT_RING_FEATURES,
        queue_size: int = 64,
        rx_buffers: int = 16,
        rx_buffer_size: int = 1024,
        tx_buffers: int = 16,
        tx_buffer_size: int = 4096,
        read_limit: int = 64 * 1024,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        dma = dma if dma is not None else DmaPool.for_transport(transport)
        self._transport, self._dma, self._mem = transport, dma, dma.memory
        self._queue_size = queue_size
        self._rx_shape, self._tx_shape = (rx_buffers, rx_buffer_size), (tx_buffers, tx_buffer_size)
        self._rings: list[DmaBuffer] = []
        self._buffers: list[DmaBuffer] = []
        self._rxq: DriverQueue[DmaBuffer] | None = None
        self._txq: DriverQueue[tuple[DmaBuffer, int]] | None = None
        self._rx_idle: list[DmaBuffer] = []
        self._tx_free: list[DmaBuffer] = []
        self._tx_pending = bytearray()
        self._tx_in_flight = 0
        self._reading = True
        self._service_scheduled = False
        self._resize_waiters: list[asyncio.Future[tuple[int, int]]] = []
        self.resize_callbacks: list[Callable[[tuple[int, int]], None]] = []
        self.size: tuple[int, int] | None = None
        self.broken: str | None = None
        self._ended = False
        self.reader = asyncio.StreamReader(limit=read_limit, loop=self._loop)
        self._protocol = asyncio.StreamReaderProtocol(self.reader, loop=self._loop)
        self._stream = ConsoleTransport(self, self._protocol, self._loop)
        self._protocol.connection_made(self._stream)
        self.writer = asyncio.StreamWriter(self._stream, self._protocol, self.reader, self._loop)
        wanted = bit(S.VIRTIO_F_VERSION_1) | bit(S.VIRTIO_F_ACCESS_PLATFORM)
        self.features = probe(transport, wanted | ring_features | CONSOLE_FEATURES, self._setup)
        self._stream.set_extra("virtio_features", self.features)
        self._repost(kick_anyway=True)  # DRIVER_OK is set: now the device may look

    # ---------------------------------------------------------------- set-up (probe step 7)
    def _setup(self, features: int) -> None:
        self._rxq = self._attach(C.RECEIVEQ_PORT0, features)
        self._txq = self._attach(C.TRANSMITQ_PORT0, features)
        count, size = self._rx_shape
        for _ in range(min(count, self._rxq.config.size)):
            buf = self._alloc(size)
            self._rxq.add(self._mem, [], [(buf.addr, size)], buf)
        count, size = self._tx_shape
        self._tx_free = [self._alloc(size) for _ in range(min(count, self._txq.config.size))]
        self._read_size(features)

    def _attach(self, index: int, features: int) -> DriverQueue[Any]:
        size = min(self._queue_size, self._transport.queue_max_size(index))
        if RingFormat.from_features(features) is RingFormat.SPLIT:
            size = 1 << (size.bit_length() - 1)
        ring = self._dma.alloc(queue_footprint(features, 0, size), 4096)
        self._rings.append(ring)
        return attach_queue(self._transport, self._mem, index, features, ring.addr, size)

    def _alloc(self, size: int) -> DmaBuffer:
        buf = self._dma.alloc(size, 16)
        self._buffers.append(buf)
        return buf

    def _read_size(self, features: int) -> None:
        if not features >> C.VIRTIO_CONSOLE_F_SIZE & 1:
            return
        cols, rows = struct.unpack("<HH", read_config(self._transport, 0, 4))
        size = (int(cols), int(rows))
        if size == self.size:
            return
        first = self.size is None
        self.size = size
        if first:
            return
        waiters, self._resize_waiters = self._resize_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(size)
        for callback in self.resize_callbacks:
            callback(size)

    async def wait_resize(self) -> tuple[int, int]:
        """The next console size the device announces."""
        waiter: asyncio.Future[tuple[int, int]] = self._loop.create_future()
        self._resize_waiters.append(waiter)
        return await waiter

    def emergency_write(self, data: bytes) -> None:
        """Write through ``emerg_wr`` (bypasses the queues; slow, one access per byte)."""
        emergency_write(self._transport, data)

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
        """Acknowledge the interrupt; take input, recycle transmit buffers, follow a
        resize (loop thread)."""
        self._service_scheduled = False
        if self.broken is not None:
            return
        flags = self._transport.ack_interrupt()
        try:
            if flags & InterruptFlags.CONFIG:
                if self._transport.get_status() & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET:
                    self._fail("the device needs a reset")
                    return
                self._read_size(self.features)
            self._reap_rx()
            self._reap_tx()
        except VirtqueueError as err:
            self._fail(f"the device broke a queue: {err}")

    def _reap_rx(self) -> None:
        rxq = self._rxq
        if rxq is None:
            return
        while True:
            items = rxq.get_used_batch(self._mem, _REAP_BATCH)
            for buf, written in items:  # the queue checked written <= the buffer
                if written and not self._ended:
                    self._protocol.data_received(bytes(buf.view[:written]))
                self._rx_idle.append(buf)
            self._repost()
            if not items and not rxq.enable_cb(self._mem):
                return

    def _repost(self, kick_anyway: bool = False) -> None:
        rxq = self._rxq
        if rxq is None or not self._reading or self._ended:
            return  # after the stream ended, input waits in the device (bounded)
        if not (self._rx_idle or kick_anyway):
            return
        for buf in self._rx_idle:
            rxq.add(self._mem, [], [(buf.addr, buf.size)], buf)
        self._rx_idle.clear()
        kick(self._transport, rxq, self._mem)

    def _reap_tx(self) -> None:
        txq = self._txq
        if txq is None:
            return
        while True:
            items = txq.get_used_batch(self._mem, _REAP_BATCH)
            for (buf, n), _ in items:
                self._tx_free.append(buf)
                self._tx_in_flight -= n
            if items:
                self._flush_tx()
            elif not txq.enable_cb(self._mem):
                break
        self._stream.update_flow()

    # ---------------------------------------------------------------- the stream's side
    def _set_reading(self, on: bool) -> None:
        self._reading = on
        if on and self.broken is None:
            self._repost()

    def _tx_write(self, data: bytes) -> None:
        if self.broken is not None:
            raise ConnectionResetError(self.broken)
        self._tx_pending += data
        self._flush_tx()

    @property
    def _tx_backlog(self) -> int:
        return len(self._tx_pending) + self._tx_in_flight

    def _flush_tx(self) -> None:
        txq = self._txq
        if txq is None:
            return
        added = False
        while self._tx_pending and self._tx_free:
            buf = self._tx_free.pop()
            n = min(len(self._tx_pending), buf.size)
            buf.view[:n] = self._tx_pending[:n]
            del self._tx_pending[:n]
            txq.add(self._mem, [(buf.addr, n)], [], (buf, n))  # never full: buffers <= size
            self._tx_in_flight += n
            added = True
        if added:
            kick(self._transport, txq, self._mem)

    def _stream_closed(self) -> None:
        self._end(None)

    def _end(self, exc: Exception | None) -> None:
        if not self._ended:
            self._ended = True
            self._stream.connection_lost(exc)

    def _fail(self, reason: str) -> None:
        log.warning("virtio-console: %s", reason)
        self.broken = reason
        self._end(ConnectionResetError(reason))
        for waiter in self._resize_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError(reason))

    # ---------------------------------------------------------------- teardown
    def close(self) -> None:
        """Reset the device (it stops using our memory), end the streams, and give the
        DMA memory back. Bytes not yet transmitted are lost."""
        try:
            self._transport.reset()
        finally:
            if self.broken is None:
                self.broken = "the driver was closed"
            self._end(None)
            for queue in (self._rxq, self._txq):
                if queue is not None:
                    queue.detach_unused()
            for buf in self._buffers + self._rings:
                self._dma.free(buf)
            self._buffers, self._rings = [], []
            self._rxq = self._txq = None
