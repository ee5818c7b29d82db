"""`VirtioBlkDriver`: the guest side of virtio-blk over any `VirtioTransport`, with an
asyncio interface that is the NBD `BlockBackend` port (and `DirectBackend`: callback
reads and writes, see `direct`), so ``NbdServer(driver)`` exports the guest's disk to
the host.

Threads: construct it anywhere (it probes the device synchronously); afterwards use it
from one event loop (the first coroutine call binds it). ``interrupt()`` may be called
from any thread: it schedules the completion work on that loop.

Requests: each I/O becomes one or more virtio requests (header, one bounce buffer in DMA
memory, status byte), many in flight at once over all queues; the ring size bounds what
is on a ring, the rest waits in a backlog; DMA memory bounds the total.

Reset: `reconnect` sets the device up again (after the device was restarted, or reported
DEVICE_NEEDS_RESET, or returned garbage) and replays every request it had not
completed. Requests that completed were delivered; none is lost. A replayed write may
reach the disk twice, which a block device tolerates (Linux's virtio_blk does the same).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from typing import TYPE_CHECKING, Final

from xenvirtio.drivers.blk import commands as C
from xenvirtio.drivers.blk import direct as D
from xenvirtio.drivers.blk.buffers import DmaWaiter
from xenvirtio.drivers.blk.queues import InFlight, RequestQueues, Waiter
from xenvirtio.mem.api import Buffer
from xenvirtio.nbd.backend import BlockIOError, DirectBackend, ReadDone, WriteDone
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_blk as B
from xenvirtio.transport.api import InterruptFlags, VirtioTransport
from xenvirtio.transport.dma import DmaBuffer, DmaMemory, DmaPool
from xenvirtio.transport.probe import probe, read_config_consistent
from xenvirtio.virtio.features import bit
from xenvirtio.virtio.queue import QueueConfig, VirtqueueError

log = logging.getLogger(__name__)
T = B.VirtioBlkType

DEFAULT_RING_FEATURES: Final = (
    bit(S.VIRTIO_RING_F_INDIRECT_DESC)
    | bit(S.VIRTIO_RING_F_EVENT_IDX)
    | bit(S.VIRTIO_F_RING_PACKED)
)
BLK_FEATURES: Final = sum(
    bit(f)
    for f in (
        B.VIRTIO_BLK_F_SIZE_MAX,
        B.VIRTIO_BLK_F_SEG_MAX,
        B.VIRTIO_BLK_F_RO,
        B.VIRTIO_BLK_F_BLK_SIZE,
        B.VIRTIO_BLK_F_FLUSH,
        B.VIRTIO_BLK_F_TOPOLOGY,
        B.VIRTIO_BLK_F_MQ,
        B.VIRTIO_BLK_F_DISCARD,
        B.VIRTIO_BLK_F_WRITE_ZEROES,
    )
)
MAX_RECONNECTS: Final = 3  # consecutive resets without a completed request: give up
_STATUS_UNSET: Final = 0xFF  # never a valid status: a device that skips it reads as EIO
DATA_OFFSET: Final = C.DATA_OFFSET


class DriverBrokenError(Exception):
    """The device kept failing after resets; the driver stopped using it."""


class VirtioBlkDriver:
    """A virtio-blk disk. Implements the NBD `BlockBackend` (size, block_size,
    read_only, can_trim, can_write_zeroes; read, write, flush, trim, write_zeroes) plus
    ``get_id``. ``ring_features`` limits the ring features it may accept (e.g. no
    packed rings); ``exclude`` drops device features it would otherwise accept. ``dma``
    defaults to ``DmaPool.for_transport(transport)``."""

    def __init__(
        self,
        transport: VirtioTransport,
        dma: DmaMemory | None = None,
        *,
        ring_features: int = DEFAULT_RING_FEATURES,
        exclude: int = 0,
        max_queues: int = 64,
        queue_size: int = 256,
        max_request_bytes: int = 1 << 20,
        auto_reconnect: bool = True,
    ) -> None:
        self._transport = transport
        dma = dma if dma is not None else DmaPool.for_transport(transport)
        self._dma = dma
        self._mem = dma.memory
        wanted = bit(S.VIRTIO_F_VERSION_1) | bit(S.VIRTIO_F_ACCESS_PLATFORM) | BLK_FEATURES
        self._wanted = (wanted | ring_features) & ~exclude
        self._max_queues, self._queue_size = max_queues, queue_size
        self._max_request = max_request_bytes
        self._limit = 0  # max_request_bytes for _limit_info
        self._limit_info: C.DiskInfo | None = None
        self.auto_reconnect = auto_reconnect
        self._queues = RequestQueues(transport, dma, self._free)
        self._buffers = DmaWaiter(dma, self._bind)
        self._direct = D.DirectSubmitter(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._service_scheduled = False
        self._kick_scheduled = False
        self._irq_early = False
        self._seq = 0
        self._failed_resets = 0
        self.broken = False
        self.reconnects = 0
        self.features = 0
        self.info = C.DiskInfo(0, B.SECTOR_SIZE, True, False, False, False, 1)
        self._setup()

    # ---------------------------------------------------------------- device set-up
    def _setup(self) -> None:
        self._buffers.release_kept()  # the rings come first
        self.features = probe(self._transport, self._wanted, self._configure)

    def _configure(self, features: int) -> None:
        raw = read_config_consistent(self._transport, 0, B.VIRTIO_BLK_CONFIG_SIZE)
        self.info = C.DiskInfo.from_config(B.VirtioBlkConfig.unpack(raw), features)
        count = min(self.info.num_queues, self._max_queues, self._transport.num_queues)
        indirect = bool(features >> S.VIRTIO_RING_F_INDIRECT_DESC & 1)
        self._queues.attach(features, max(1, count), self._queue_size, indirect)

    @property
    def num_queues(self) -> int:
        return len(self._queues.queues)

    @property
    def queue_configs(self) -> list[QueueConfig]:
        """Where each request queue lives (DMA addresses), as the device was told."""
        return [queue.config for queue in self._queues.queues]

    # ---------------------------------------------------------------- BlockBackend facts
    @property
    def size(self) -> int:
        return self.info.size

    @property
    def block_size(self) -> int:
        return self.info.block_size

    @property
    def read_only(self) -> bool:
        return self.info.read_only

    @property
    def can_trim(self) -> bool:
        return self.info.discard and not self.info.read_only

    @property
    def can_write_zeroes(self) -> bool:
        return not self.info.read_only

    @property
    def max_request_bytes(self) -> int:
        """The largest data buffer one request carries (one segment, so size_max)."""
        info = self.info
        if self._limit_info is not info:  # computed once per negotiated DiskInfo
            limit = self._max_request
            if info.size_max:
                limit = min(limit, info.size_max // info.block_size * info.block_size)
            self._limit, self._limit_info = max(limit, info.block_size), info
        return self._limit

    # ---------------------------------------------------------------- interrupts
    def interrupt(self) -> None:
        """The device interrupted (any thread). Completion runs later on the loop."""
        loop = self._loop
        if loop is None:
            self._irq_early = True  # nothing is in flight before the first request
            return
        if self._service_scheduled:
            return
        self._service_scheduled = True
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self.service)
        else:
            loop.call_soon_threadsafe(self.service)

    def service(self) -> None:
        """Acknowledge the interrupt and complete what the device returned (loop thread)."""
        self._service_scheduled = False
        flags = self._transport.ack_interrupt()
        if flags & InterruptFlags.CONFIG and self._check_config():
            return
        try:
            if self._queues.reap():
                self._failed_resets = 0
        except VirtqueueError as err:
            log.warning("virtio-blk: device broke a queue (%s); resetting it", err)
            self._recover()
            return
        self._kick_soon()

    def _check_config(self) -> bool:
        """Configuration change: the device may need a reset, or changed capacity.
        Returns True when it reset the device."""
        if self._transport.get_status() & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET:
            log.warning("virtio-blk: device needs a reset")
            self._recover()
            return True
        raw = read_config_consistent(self._transport, 0, B.VIRTIO_BLK_CONFIG_SIZE)
        self.info = C.DiskInfo.from_config(B.VirtioBlkConfig.unpack(raw), self.features)
        return False

    def _recover(self) -> None:
        if self.auto_reconnect:
            self.reconnect()
        else:
            self._fail_all(errno.EIO)

    # ---------------------------------------------------------------- reconnect
    def reconnect(self) -> None:
        """Set the device up again over the same transport and replay every request not
        yet completed. Call it on the loop thread when the transport reconnected (the
        device was restarted); also used on DEVICE_NEEDS_RESET."""
        pending = self._queues.detach()
        self._failed_resets += 1
        self.reconnects += 1
        if self._failed_resets > MAX_RECONNECTS or self.broken:
            self._give_up(pending)
            return
        try:
            self._setup()
        except Exception as err:  # the device is gone for good: fail, do not hang
            log.error("virtio-blk: reconnect failed: %s", err)
            self._give_up(pending)
            return
        for req in pending:
            if req.future.done():
                self._free(req)
            else:
                self._queues.enqueue(req)
        self._queues.kick_all()

    def _give_up(self, pending: list[InFlight]) -> None:
        self.broken = True
        for req in pending:
            self._finish_with_error(req, errno.EIO)

    def _fail_all(self, err: int) -> None:
        for req in self._queues.detach():
            self._finish_with_error(req, err)

    def _finish_with_error(self, req: InFlight, err: int) -> None:
        if req.future.done():
            self._free(req)
        else:
            req.future.set_exception(BlockIOError(err, "virtio-blk device failed"))

    # ---------------------------------------------------------------- submission
    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            if self._irq_early:
                self.interrupt()
        if self.broken:
            raise BlockIOError(errno.EIO, "virtio-blk device failed")
        return loop

    def _free(self, req: InFlight) -> None:
        for buf in req.buffers:
            self._buffers.free(buf)
        req.buffers.clear()

    async def _submit(
        self, rtype: int, sector: int = 0, *, out: Buffer | None = None, in_len: int = 0
    ) -> InFlight:
        """Queue one request and wait for its status. One DMA buffer holds the header
        (+0), the status byte (+16) and the data (`DATA_OFFSET`): ``out`` is copied in
        (device-readable), or ``in_len`` bytes are left for the device to fill. Returns
        the request with its buffer still held: the caller reads `data`, then calls
        ``_free``. Raises BlockIOError."""
        loop = self._bind()
        out_len = 0 if out is None else memoryview(out).nbytes
        buf = await self._buffers.alloc(DATA_OFFSET + out_len + in_len, 512)
        req = self._queue(rtype, sector, buf, out, in_len, loop.create_future())
        try:
            status = await req.future  # type: ignore[misc]
        except asyncio.CancelledError:
            raise  # still on a ring: its completion frees the buffer
        except BaseException:
            self._free(req)
            raise
        err = C.status_errno(status)
        if err is not None:
            self._free(req)
            raise BlockIOError(err, f"virtio-blk request type {rtype} failed (status {status})")
        return req

    def _queue(
        self,
        rtype: int,
        sector: int,
        buf: DmaBuffer,
        out: Buffer | None,
        in_len: int,
        waiter: Waiter,
    ) -> InFlight:
        """Fill ``buf`` (header, unset status, ``out``) and put the request on a queue;
        the kick follows at the end of this loop turn."""
        view = buf.view
        view[:16] = C.header(rtype, sector)
        view[16] = _STATUS_UNSET
        addr = buf.addr
        readable, writable = [(addr, 16)], [(addr + 16, 1)]
        if out is not None:
            data = memoryview(out).cast("B")
            view[DATA_OFFSET : DATA_OFFSET + data.nbytes] = data
            readable.append((addr + DATA_OFFSET, data.nbytes))
        if in_len:
            writable.insert(0, (addr + DATA_OFFSET, in_len))
        self._seq += 1
        req = InFlight(self._seq, readable, writable, addr + 16, [buf], waiter)
        self._queues.enqueue(req)
        self._kick_soon()
        return req

    @staticmethod
    def data(req: InFlight, length: int) -> memoryview:
        """The data area of a completed request."""
        return req.buffers[0].view[DATA_OFFSET : DATA_OFFSET + length]

    def _kick_soon(self) -> None:
        if self._kick_scheduled or not self._queues.needs_kick or self._loop is None:
            return
        self._kick_scheduled = True
        self._loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        self._queues.kick_all()

    # ---------------------------------------------------------------- BlockBackend I/O
    async def read(self, offset: int, length: int) -> bytearray:
        out = bytearray(length)
        pieces = list(C.chunks(offset, length, self.max_request_bytes))
        if len(pieces) == 1:  # the common case: no task per piece
            await self._read_into(out, 0, offset, length)
        else:
            await asyncio.gather(*(self._read_into(out, o - offset, o, n) for o, n in pieces))
        return out

    async def _read_into(self, out: bytearray, pos: int, offset: int, length: int) -> None:
        req = await self._submit(T.VIRTIO_BLK_T_IN, offset >> B.SECTOR_SHIFT, in_len=length)
        out[pos : pos + length] = self.data(req, length)
        self._free(req)

    # ---------------------------------------------------------------- DirectBackend
    def submit_read(self, offset: int, length: int, done: ReadDone) -> None:
        """`read` without a coroutine: ``done(view, release)`` gets the data in the
        request's own DMA buffer (no copy), held until ``release()``."""
        self._direct.read(offset, length, done)

    def submit_write(self, offset: int, data: bytes, fua: bool, done: WriteDone) -> None:
        """`write` without a coroutine; ``data`` is copied into DMA memory at once."""
        self._direct.write(offset, data, fua, done)

    async def write(self, offset: int, data: bytes, fua: bool = False) -> None:
        self._check_writable()
        view = memoryview(data).cast("B")
        pieces = list(C.chunks(offset, len(view), self.max_request_bytes))
        if len(pieces) == 1:
            await self._write_one(view, offset)
        else:
            await asyncio.gather(
                *(self._write_one(view[o - offset : o - offset + n], o) for o, n in pieces)
            )
        if fua:
            await self.flush()

    async def _write_one(self, data: memoryview, offset: int) -> None:
        self._free(await self._submit(T.VIRTIO_BLK_T_OUT, offset >> B.SECTOR_SHIFT, out=data))

    async def flush(self) -> None:
        if self.info.flush:  # without FLUSH the device completes writes stable (5.2.6.2)
            self._free(await self._submit(T.VIRTIO_BLK_T_FLUSH))

    async def trim(self, offset: int, length: int) -> None:
        self._check_writable()
        if not self.can_trim:
            raise BlockIOError(errno.EOPNOTSUPP, "device does not support discard")
        info = self.info
        bodies = C.range_requests(
            offset, length, info.max_discard_sectors, info.max_discard_seg, False
        )
        await self._ranges(T.VIRTIO_BLK_T_DISCARD, bodies)

    async def write_zeroes(self, offset: int, length: int, may_trim: bool = False) -> None:
        self._check_writable()
        info = self.info
        if not info.write_zeroes:  # fall back to writing zeroes
            for off, n in C.chunks(offset, length, self.max_request_bytes):
                await self.write(off, bytes(n))
            return
        unmap = may_trim and info.write_zeroes_may_unmap
        bodies = C.range_requests(
            offset, length, info.max_write_zeroes_sectors, info.max_write_zeroes_seg, unmap
        )
        await self._ranges(T.VIRTIO_BLK_T_WRITE_ZEROES, bodies)

    async def _ranges(self, rtype: int, bodies: list[bytes]) -> None:
        async def one(body: bytes) -> None:
            self._free(await self._submit(rtype, out=body))

        await asyncio.gather(*(one(body) for body in bodies))

    async def get_id(self) -> str:
        """The device's serial (GET_ID)."""
        req = await self._submit(T.VIRTIO_BLK_T_GET_ID, in_len=B.VIRTIO_BLK_ID_BYTES)
        ident = C.parse_id(bytes(self.data(req, B.VIRTIO_BLK_ID_BYTES)))
        self._free(req)
        return ident

    def _check_writable(self) -> None:
        if self.info.read_only:
            raise BlockIOError(errno.EPERM, "the device is read-only")

    def close(self) -> None:
        """Reset the device (it stops using our memory) and fail what is pending."""
        try:
            self._transport.reset()
        finally:
            self._fail_all(errno.ESHUTDOWN)
            self._queues.release_rings()
            self.broken = True


if TYPE_CHECKING:

    def _conforms(driver: VirtioBlkDriver) -> DirectBackend:
        return driver
