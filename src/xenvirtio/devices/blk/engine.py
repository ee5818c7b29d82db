"""Engines execute parsed virtio-blk requests against a `BlockFile` (compare firecracker's
``io/{sync_io,async_io}``).

An engine gets ``submit(backing, request, mem, done)`` and calls ``done(status)`` exactly
once, from whatever thread ran the request: `SyncEngine` at once in the caller's thread,
`ThreadPoolEngine` later from a worker, with many requests in flight. Data moves with
``preadv``/``pwritev`` straight between the file and zero-copy views of the request's
validated guest segments (`Reader`/`Writer` views), so nothing else is touched.

``done`` receives a VIRTIO_BLK_S_* status, or `FAULT` when guest memory vanished under
the request (a revoked grant, an unmapped range): the device then needs a reset.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Final, Protocol

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.request import Request
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec.virtio_blk import VirtioBlkStatus, VirtioBlkType
from xenvirtio.virtio.chain import Segments
from xenvirtio.virtio.queue import DescriptorAddressError, VirtqueueError

log = logging.getLogger(__name__)

FAULT: Final = -1
OK: Final = int(VirtioBlkStatus.VIRTIO_BLK_S_OK)
IOERR: Final = int(VirtioBlkStatus.VIRTIO_BLK_S_IOERR)
UNSUPP: Final = int(VirtioBlkStatus.VIRTIO_BLK_S_UNSUPP)
T = VirtioBlkType

Done = Callable[[int], None]
_Job = tuple[BlockFile, Request, GuestMemory, Done]
INLINE_READ_MAX: Final = 256 << 10  # larger reads copy long enough to stall the caller


class BlkEngine(Protocol):
    """Where requests run. ``done`` is called exactly once per ``submit``."""

    def submit(
        self, backing: BlockFile, request: Request, mem: GuestMemory, done: Done
    ) -> None: ...

    def try_now(self, backing: BlockFile, request: Request, mem: GuestMemory) -> int | None:
        """Run ``request`` at once in the caller's thread if this engine would (the
        status), else None and nothing was done: then `submit` it."""
        ...

    def close(self) -> None:
        """Finish what was submitted, then release threads."""
        ...


def guest_views(mem: GuestMemory, segments: Segments, write: bool) -> list[memoryview]:
    """Zero-copy views of a request's data segments (validated by the parser), as a
    `Writer`/`Reader` over them would give, without the stream bookkeeping."""
    out: list[memoryview] = []
    try:
        for addr, length in segments:
            if write:
                mem.check(addr, length, write=True)
            out.extend(mem.views(addr, length))
    except GuestMemoryError as err:
        raise DescriptorAddressError(str(err), err) from err
    return out


def execute(backing: BlockFile, req: Request, mem: GuestMemory) -> None:
    """Run one request in the calling thread; raises OSError (I/O) or VirtqueueError /
    GuestMemoryError (guest memory gone)."""
    kind = req.type
    if kind == T.VIRTIO_BLK_T_IN:
        backing.preadv(guest_views(mem, req.data, True), req.offset)
    elif kind == T.VIRTIO_BLK_T_OUT:
        backing.pwritev(guest_views(mem, req.data, False), req.offset)
    elif kind == T.VIRTIO_BLK_T_DISCARD:
        for rng in req.ranges:  # a hint: a file system without holes does nothing
            backing.punch(rng.offset, rng.length)
    elif kind == T.VIRTIO_BLK_T_WRITE_ZEROES:
        for rng in req.ranges:
            backing.write_zeroes(rng.offset, rng.length, rng.unmap)
    if kind == T.VIRTIO_BLK_T_FLUSH or req.fua:
        backing.datasync()  # 5.2.6.2: stable before the flush (or write) completes


def run(backing: BlockFile, req: Request, mem: GuestMemory) -> int:
    """`execute` mapped to a status: OK, IOERR for I/O errors, `FAULT` for memory."""
    try:
        execute(backing, req, mem)
    except OSError:
        return IOERR
    except (VirtqueueError, GuestMemoryError):
        return FAULT
    except Exception:  # a bug here must not wedge the device: answer, and say so
        log.exception("virtio-blk request %r failed unexpectedly", req)
        return IOERR
    return OK


class SyncEngine:
    """Runs each request at once in the submitting thread (tests, simple setups)."""

    def submit(self, backing: BlockFile, request: Request, mem: GuestMemory, done: Done) -> None:
        done(run(backing, request, mem))

    def try_now(self, backing: BlockFile, request: Request, mem: GuestMemory) -> int | None:
        return run(backing, request, mem)

    def close(self) -> None:
        pass


def try_inline(backing: BlockFile, req: Request, mem: GuestMemory) -> int | None:
    """A read served from the page cache without blocking (RWF_NOWAIT), in the calling
    thread: the status, or None when it would have to wait."""
    if req.type != T.VIRTIO_BLK_T_IN or req.data_len > INLINE_READ_MAX:
        return None
    try:
        done = backing.preadv_nowait(guest_views(mem, req.data, True), req.offset)
    except OSError:
        return None  # let the blocking path report it
    except (VirtqueueError, GuestMemoryError):
        return FAULT
    return OK if done else None


class ThreadPoolEngine:
    """Runs requests on ``workers`` threads; the syscalls release the GIL, so that many
    requests (of any number of devices sharing the engine) are in flight at once. Reads
    the page cache can serve at once (``inline``) complete in the submitting thread and
    skip the two thread hops.

    ``peak`` is the largest number of requests seen executing at the same time."""

    def __init__(self, workers: int = 8, *, inline: bool = True) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        # A bare queue and threads: no executor future per request.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._worker, name=f"virtio-blk-{i}", daemon=True)
            for i in range(workers)
        ]
        self._lock = threading.Lock()
        self._running = 0
        self.peak = 0
        self.inline = inline
        for thread in self._threads:
            thread.start()

    def submit(self, backing: BlockFile, request: Request, mem: GuestMemory, done: Done) -> None:
        if self.inline:
            status = try_inline(backing, request, mem)
            if status is not None:
                done(status)
                return
        self._jobs.put((backing, request, mem, done))

    def try_now(self, backing: BlockFile, request: Request, mem: GuestMemory) -> int | None:
        return try_inline(backing, request, mem) if self.inline else None

    def _work(self, backing: BlockFile, request: Request, mem: GuestMemory, done: Done) -> None:
        with self._lock:
            self._running += 1
            self.peak = max(self.peak, self._running)
        try:
            status = run(backing, request, mem)
        finally:
            with self._lock:
                self._running -= 1
        done(status)

    def _worker(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._work(*job)

    def close(self) -> None:
        """Every job queued runs first (the stop markers queue behind them)."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()
