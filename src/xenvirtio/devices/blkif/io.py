"""blkback's I/O: one checked request as a `Job`, and the worker pool that runs jobs.

A `Job` is made on the backend's thread from a request that passed every check; it
holds either views of the data pages (persistent mappings: ``preadv``/``pwritev`` go
straight into guest pages) or the pieces to grant-copy. `run_job` executes it on a
worker and returns the ``BLKIF_RSP_*`` status: a read fills the pages, a write reaches
the file, BLKIF_OP_FLUSH_DISKCACHE is ``fdatasync`` and BLKIF_OP_WRITE_BARRIER writes
then ``fdatasync`` (the queue has drained everything before it), both before the
response. `BlkifEngine` is the pool (compare `xenvirtio.devices.blk.engine`): the
syscalls release the GIL, so many requests of many rings are in flight at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blkif.grants import GrantAccess, GrantAccessError, Piece
from xenvirtio.pvring.blkif.request import Request
from xenvirtio.spec import blkif as B

log = logging.getLogger("xenvirtio.blkif.back")


@dataclass(frozen=True)
class Job:
    """A checked request ready to run: ``views`` (mapped pages) or ``pieces`` (copy)."""

    req: Request
    pieces: list[Piece]
    views: list[memoryview] | None

    @property
    def offset(self) -> int:
        return self.req.sector_number * B.SECTOR_SIZE


def execute(job: Job, disk: BlockFile, grants: GrantAccess) -> None:
    """Run ``job`` in the calling thread; raises OSError or GrantAccessError."""
    op = job.req.operation
    if op == B.BLKIF_OP_READ:
        if job.views is not None:
            disk.preadv(job.views, job.offset)
        else:
            buf = bytearray(job.req.length)
            disk.preadv([memoryview(buf)], job.offset)
            grants.copy_to(job.pieces, buf)
    elif op in (B.BLKIF_OP_WRITE, B.BLKIF_OP_WRITE_BARRIER):
        if job.views is not None:
            disk.pwritev(job.views, job.offset)
        elif job.pieces:
            disk.pwritev([memoryview(grants.copy_from(job.pieces))], job.offset)
        if op == B.BLKIF_OP_WRITE_BARRIER:
            disk.datasync()
    elif op == B.BLKIF_OP_FLUSH_DISKCACHE:
        disk.datasync()
    elif op == B.BLKIF_OP_DISCARD:
        disk.punch(job.offset, job.req.nr_sectors * B.SECTOR_SIZE)


def run_job(job: Job, disk: BlockFile, grants: GrantAccess) -> int:
    """`execute` mapped to a status: OKAY, or ERROR for I/O and grant failures."""
    try:
        execute(job, disk, grants)
    except (OSError, GrantAccessError) as exc:
        log.debug("request %d: %s", job.req.id, exc)
        return B.BLKIF_RSP_ERROR
    except Exception:  # a bug here must not wedge the ring: answer, and say so
        log.exception("blkif request %r failed unexpectedly", job.req)
        return B.BLKIF_RSP_ERROR
    return B.BLKIF_RSP_OKAY


class BlkifEngine:
    """``workers`` threads shared by every ring of a runner. ``done(status)`` is called
    exactly once per `submit`, from a worker. ``peak`` is the most jobs seen running at
    the same time."""

    def __init__(self, workers: int = 8) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blkback")
        self._lock = threading.Lock()
        self._running = 0
        self.peak = 0

    def submit(self, work: Callable[[], int], done: Callable[[int], None]) -> None:
        self._pool.submit(self._work, work, done)

    def _work(self, work: Callable[[], int], done: Callable[[int], None]) -> None:
        with self._lock:
            self._running += 1
            self.peak = max(self.peak, self._running)
        try:
            status = work()
        finally:
            with self._lock:
                self._running -= 1
        done(status)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
