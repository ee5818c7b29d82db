"""One blkif ring of a connection: copy requests out, run them on the engine, answer.

The ring side runs on the backend's thread: every request is parsed from the private
copy the ring returns and checked (indirect segment pages copied in, persistent grants
mapped) before it becomes a `Job`; a bad request is answered ``BLKIF_RSP_ERROR`` /
``BLKIF_RSP_EOPNOTSUPP`` at once. Jobs run on the shared `BlkifEngine`, many at a time;
a read the page cache can serve at once (``RWF_NOWAIT``) is answered inline. Workers
only queue their completions and wake the backend's thread, which puts every finished
response on the ring, pushes once and notifies at most once per batch. In-flight
requests are bounded by the ring: a slot is reused only once answered.

BLKIF_OP_WRITE_BARRIER (``feature-barrier``): the ring is not read past a barrier until
every earlier request has completed; the barrier then runs alone (write, ``fdatasync``)
and reading resumes after its response.

A ring the frontend broke (producer overflow) raises `RingProducerOverflow` to the
caller, which fails the device; `close` waits for the jobs still running (they touch
mapped guest pages) before the caller unmaps anything.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from functools import partial

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.engine import INLINE_READ_MAX
from xenvirtio.devices.blkif.grants import GrantAccess, GrantAccessError, Piece
from xenvirtio.devices.blkif.io import BlkifEngine, Job, run_job
from xenvirtio.pvring.blkif.request import (
    REQUEST_CODEC,
    RESPONSE_CODEC,
    BadRequest,
    Limits,
    Request,
    Response,
    parse,
    parse_indirect_segments,
)
from xenvirtio.pvring.ring import BackRing
from xenvirtio.spec import blkif as B

log = logging.getLogger("xenvirtio.blkif.back")

MAX_BATCH = 64  # requests taken per round before answering what finished
MAX_ROUNDS = 4  # rounds per turn; then the ring waits behind the backend's other work
DRAIN_TIMEOUT = 30.0  # seconds `close` waits for running jobs

Wakeup = Callable[[Callable[[], None]], None]  # run a function on the backend's thread


class BlkifQueue:
    """``ring_pages`` (mapped shared pages) served from ``disk`` through ``grants``.

    ``wakeup(fn)`` must run ``fn`` on the backend's thread soon (any thread may call it).
    """

    def __init__(
        self, ring_pages: memoryview, disk: BlockFile, grants: GrantAccess, limits: Limits,
        notify: Callable[[], None], engine: BlkifEngine, wakeup: Wakeup,
    ) -> None:  # fmt: skip
        self.ring: BackRing[bytes, Response] = BackRing(ring_pages, REQUEST_CODEC, RESPONSE_CODEC)
        self.disk, self.grants, self.limits = disk, grants, limits
        self.notify, self.engine, self.wakeup = notify, engine, wakeup
        self.served = 0
        self.errors = 0
        self.inflight = 0  # jobs on the engine (backend thread's count)
        self.closed = False
        self._done: deque[tuple[Response, bool]] = deque()  # (response, from the engine)
        self._serving = False
        self._wakeup_pending = False
        self._barrier: Job | None = None
        self._barrier_started = False
        self._running = 0  # jobs not yet finished (workers' count, under _cv)
        self._cv = threading.Condition()

    # --- the ring (backend thread) --------------------------------------------------
    def service(self) -> None:
        """Take requests until the ring is empty and ``req_event`` is armed (the final
        check), or a barrier holds it; then answer what has finished."""
        self._serving = True
        try:
            for _ in range(MAX_ROUNDS):
                if self.closed or self._barrier is not None:
                    break
                taken = 0
                while taken < MAX_BATCH and self._barrier is None:
                    raw = self.ring.copy_request()
                    if raw is None:
                        break
                    self._start(raw)
                    taken += 1
                if taken == MAX_BATCH:
                    self._complete()  # answer early: a long run of requests keeps moving
                elif self._barrier is not None or not self.ring.final_check_for_requests():
                    break
            else:  # a frontend that keeps the ring full: let the other rings have a turn
                self.wakeup(self.service)
        finally:
            self._serving = False  # before the final complete: see _finished
        self._complete()

    def _start(self, raw: bytes) -> None:
        self.served += 1
        try:
            req = parse(raw, self.limits)
        except BadRequest as exc:
            log.debug("request %d: %s", exc.id, exc)
            self._done.append((Response(exc.id, exc.operation, exc.status), False))
            return
        try:
            job = self._prepare(req)
        except BadRequest as exc:
            log.debug("request %d: %s", exc.id, exc)
            self._done.append((Response(exc.id, exc.operation, exc.status), False))
            return
        except GrantAccessError as exc:
            log.debug("request %d: %s", req.id, exc)
            self._done.append((Response(req.id, req.wire_operation, B.BLKIF_RSP_ERROR), False))
            return
        if req.operation == B.BLKIF_OP_WRITE_BARRIER:
            self._barrier = job  # runs once everything before it has completed
        elif not self._inline(job):
            self._submit(job)

    def _prepare(self, req: Request) -> Job:
        """Indirect segments from a private copy of their pages; data pages mapped
        (persistent) or left to copy. Raises BadRequest / GrantAccessError."""
        if req.indirect_grefs:
            table = self.grants.copy_from([(g, 0, B.XEN_PAGE_SIZE) for g in req.indirect_grefs])
            req = parse_indirect_segments(req, table, self.limits)
        pieces: list[Piece] = [(s.gref, s.offset, s.length) for s in req.segments]
        return Job(req, pieces, self.grants.views(pieces) if pieces else None)

    def _inline(self, job: Job) -> bool:
        """Answer a read the page cache holds without a thread hop."""
        req = job.req
        if req.operation != B.BLKIF_OP_READ or job.views is None or req.length > INLINE_READ_MAX:
            return False
        try:
            if not self.disk.preadv_nowait(job.views, job.offset):
                return False
        except OSError:
            return False  # the blocking path reports it
        self._done.append((Response(req.id, req.wire_operation, B.BLKIF_RSP_OKAY), False))
        return True

    def _submit(self, job: Job) -> None:
        self.inflight += 1
        with self._cv:
            self._running += 1
        done = partial(self._finished, job.req.id, job.req.wire_operation)
        self.engine.submit(partial(run_job, job, self.disk, self.grants), done)

    def _complete(self) -> None:
        """Put every finished response on the ring: one push, at most one notify."""
        self._wakeup_pending = False
        if self.closed:
            return
        answered = 0
        while self._done:
            rsp, from_engine = self._done.popleft()
            self.inflight -= from_engine
            self.errors += rsp.status != B.BLKIF_RSP_OKAY
            self.ring.put_response(rsp)
            answered += 1
        if answered and self.ring.push_responses_and_check_notify():
            self.notify()
        if self._barrier is not None and self.inflight == 0:
            if not self._barrier_started:
                self._barrier_started = True
                self._submit(self._barrier)
            else:  # answered above: read the ring again
                self._barrier, self._barrier_started = None, False
                self.wakeup(self.service)

    # --- completions (any thread) ---------------------------------------------------
    def _finished(self, id: int, operation: int, status: int) -> None:
        """Engine callback. Append first, then decide on a wakeup: if the backend's
        thread is still serving, its closing `_complete` sees this response."""
        self._done.append((Response(id, operation, status), True))
        with self._cv:
            self._running -= 1
            self._cv.notify_all()
        if not self._serving and not self._wakeup_pending:
            self._wakeup_pending = True
            self.wakeup(self._complete)

    def close(self) -> None:
        """Answer nothing more; wait for running jobs (they use the mapped pages)."""
        self.closed = True
        with self._cv:
            if not self._cv.wait_for(lambda: self._running == 0, DRAIN_TIMEOUT):
                log.error("blkif: %d request(s) still running after %s s", self._running,
                          DRAIN_TIMEOUT)  # fmt: skip
