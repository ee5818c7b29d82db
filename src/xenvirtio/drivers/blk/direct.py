"""The driver's path for `DirectBackend` callers (the NBD server): a request completes
by calling back, without a coroutine, a task or a future of its own, and read data is
handed over in the request's DMA buffer (no copy) until the caller releases it.

`DirectSubmitter` queues such requests for the driver; `DirectRequest` is what a
request's `Callback` calls on completion; the coroutines here are the general path,
taken when a request does not fit the fast one (too large, no DMA memory free at that
moment, the driver not yet bound to its loop).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from xenvirtio.drivers.blk import commands as C
from xenvirtio.drivers.blk.queues import Callback, InFlight
from xenvirtio.nbd.backend import BlockIOError, ReadDone, WriteDone
from xenvirtio.spec import virtio_blk as B

if TYPE_CHECKING:
    from xenvirtio.drivers.blk.driver import VirtioBlkDriver

T = B.VirtioBlkType

log = logging.getLogger(__name__)


def nothing() -> None:
    """``release`` of data that holds no DMA memory."""


def as_block_error(error: BaseException) -> BlockIOError:
    if isinstance(error, BlockIOError):
        return error
    return BlockIOError(errno.EIO, f"virtio-blk request failed: {error!r}")


def outcome(rtype: int, status: int | None, error: BaseException | None) -> BlockIOError | None:
    """A completed request's error to report, or None."""
    if error is not None:
        return as_block_error(error)
    err = C.status_errno(0xFF if status is None else status)  # no status: EIO
    if err is None:
        return None
    return BlockIOError(err, f"virtio-blk request type {rtype} failed (status {status})")


class DirectRequest:
    """Completion of one direct request: a read hands ``data(req)`` to ``read_done``
    with a release that frees the buffer; a write frees it, flushes first when ``fua``
    (through ``flush_then``), then calls ``write_done``."""

    __slots__ = ("data", "flush_then", "free", "fua", "read_done", "req", "rtype", "write_done")

    def __init__(
        self,
        rtype: int,
        free: Callable[[InFlight], None],
        data: Callable[[InFlight], memoryview],
        flush_then: Callable[[WriteDone], None],
        read_done: ReadDone | None = None,
        write_done: WriteDone | None = None,
        fua: bool = False,
    ) -> None:
        self.rtype, self.free, self.data, self.flush_then = rtype, free, data, flush_then
        self.read_done, self.write_done, self.fua = read_done, write_done, fua
        self.req: InFlight | None = None

    def __call__(self, status: int | None, error: BaseException | None) -> None:
        try:
            self._complete(outcome(self.rtype, status, error))
        except Exception:  # a caller's bug must not stop the completion of the others
            log.exception("virtio-blk: completion callback failed")

    def _complete(self, err: BlockIOError | None) -> None:
        req = self.req
        assert req is not None
        if self.read_done is not None:
            if err is None:
                self.read_done(self.data(req), partial(self.free, req))
                return
            self.free(req)
            self.read_done(err, nothing)
            return
        self.free(req)
        assert self.write_done is not None
        if err is None and self.fua:
            self.flush_then(self.write_done)
        else:
            self.write_done(err)


async def read_copy(
    read: Callable[[int, int], Awaitable[bytearray]], offset: int, length: int, done: ReadDone
) -> None:
    try:
        data = await read(offset, length)
    except Exception as exc:
        done(as_block_error(exc), nothing)
    else:
        done(memoryview(data), nothing)


async def then_done(op: Awaitable[None], done: WriteDone) -> None:
    """Await ``op`` (a write, a flush) and report its outcome to ``done``."""
    try:
        await op
    except Exception as exc:
        done(as_block_error(exc))
    else:
        done(None)


class DirectSubmitter:
    """`submit_read` / `submit_write` of a driver: a request in one DMA buffer whose
    completion is a `DirectRequest`, or the coroutine path when it does not fit."""

    def __init__(self, driver: VirtioBlkDriver) -> None:
        self._driver = driver
        self._tasks: set[asyncio.Task[None]] = set()

    def read(self, offset: int, length: int, done: ReadDone) -> None:
        drv = self._driver
        data = partial(drv.data, length=length)
        call = DirectRequest(T.VIRTIO_BLK_T_IN, drv._free, data, self._flush_then, done)
        if not self._queue(call, offset, None, length):
            self._spawn(read_copy(drv.read, offset, length, done))

    def write(self, offset: int, data: bytes, fua: bool, done: WriteDone) -> None:
        drv = self._driver
        nodata = partial(drv.data, length=0)
        call = DirectRequest(
            T.VIRTIO_BLK_T_OUT, drv._free, nodata, self._flush_then, None, done, fua
        )
        if drv.info.read_only or not self._queue(call, offset, data, 0):
            self._spawn(then_done(drv.write(offset, data, fua), done))

    def _queue(self, call: DirectRequest, offset: int, out: bytes | None, in_len: int) -> bool:
        drv = self._driver
        size = in_len or (0 if out is None else len(out))
        if drv._loop is None or drv.broken or not 0 < size <= drv.max_request_bytes:
            return False
        buf = drv._buffers.try_alloc(C.DATA_OFFSET + size, 512)
        if buf is None:
            return False
        sector = offset >> B.SECTOR_SHIFT
        call.req = drv._queue(call.rtype, sector, buf, out, in_len, Callback(call))
        return True

    def _flush_then(self, done: WriteDone) -> None:
        self._spawn(then_done(self._driver.flush(), done))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._driver._loop
        task = (loop if loop is not None else asyncio.get_running_loop()).create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
