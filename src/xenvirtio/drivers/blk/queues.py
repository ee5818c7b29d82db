"""The driver's request queues: rings in DMA memory, requests added with a token, a
backlog for requests that do not fit yet, and completion by token.

Single-threaded: every method runs on the driver's event loop thread. A request is an
`InFlight` from `enqueue` until the device returns it (`reap`) or the device is reset
(`detach`, which hands back every request not yet returned so it can be replayed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from xenvirtio.transport.api import VirtioTransport
from xenvirtio.transport.dma import DmaBuffer, DmaMemory
from xenvirtio.transport.probe import attach_queue, kick, queue_footprint
from xenvirtio.virtio.queue import DriverQueue, IndirectPool, QueueFullError, RingFormat

_REAP_BATCH = 256
_DESCS_PER_REQUEST = 3  # header, data, status


class Waiter(Protocol):
    """What a request's submitter waits on: an `asyncio.Future` or a `Callback`."""

    def done(self) -> bool: ...

    def set_result(self, result: int, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Callback:
    """A `Waiter` that calls ``on_done(status, error)`` (one of them None) at once: no
    future, no task wake-up. It is never cancelled."""

    __slots__ = ("_done", "_on_done")

    def __init__(self, on_done: Callable[[int | None, BaseException | None], None]) -> None:
        self._on_done = on_done
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: int, /) -> None:
        self._done = True
        self._on_done(result, None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._done = True
        self._on_done(None, exception)


@dataclass(eq=False, slots=True)
class InFlight:
    """One request: its segments (DMA addresses), where its status byte is, the DMA
    buffers it owns, and what its submitter waits on (the status byte)."""

    seq: int
    readable: list[tuple[int, int]]
    writable: list[tuple[int, int]]
    status_addr: int
    buffers: list[DmaBuffer]
    future: Waiter
    queue: int = 0
    attempts: int = field(default=0)


class RequestQueues:
    """The request queues of one device. ``release(req)`` frees a request's buffers."""

    def __init__(
        self, transport: VirtioTransport, dma: DmaMemory, release: Callable[[InFlight], None]
    ) -> None:
        self._transport = transport
        self._dma = dma
        self._mem = dma.memory
        self._release = release
        self.queues: list[DriverQueue[Any]] = []
        self._rings: list[DmaBuffer] = []
        self._backlog: list[deque[InFlight]] = []
        self._to_kick: set[int] = set()
        self._next = 0

    # ---------------------------------------------------------------- set-up (probe step 7)
    def attach(self, features: int, count: int, size: int, indirect: bool) -> None:
        """Lay out and enable ``count`` queues of up to ``size`` entries."""
        self.release_rings()
        for index in range(count):
            qsize = min(size, self._transport.queue_max_size(index))
            if RingFormat.from_features(features) is RingFormat.SPLIT:
                qsize = 1 << (qsize.bit_length() - 1)
            ring = self._dma.alloc(queue_footprint(features, 0, qsize), 4096)
            self._rings.append(ring)
            pool = None
            if indirect:
                table = self._dma.alloc(IndirectPool.bytes_needed(_DESCS_PER_REQUEST, qsize), 16)
                self._rings.append(table)
                pool = IndirectPool(table.addr, _DESCS_PER_REQUEST, qsize)
            queue = attach_queue(
                self._transport, self._mem, index, features, ring.addr, qsize, pool
            )
            self.queues.append(queue)
        self._backlog = [deque() for _ in range(count)]
        self._next = 0

    def release_rings(self) -> None:
        for ring in self._rings:
            self._dma.free(ring)
        self._rings.clear()
        self.queues.clear()

    def detach(self) -> list[InFlight]:
        """After a device reset: every request not returned, in submission order."""
        pending: list[InFlight] = []
        for queue in self.queues:
            pending.extend(queue.detach_unused())
        for backlog in self._backlog:
            pending.extend(backlog)
            backlog.clear()
        self._to_kick.clear()
        return sorted(pending, key=lambda r: r.seq)

    # ---------------------------------------------------------------- submission
    def enqueue(self, req: InFlight) -> None:
        """Add ``req`` to the next queue (round robin), or its backlog when full; the
        kick waits for `kick_all` (so requests made in one loop turn share a kick)."""
        if not self.queues:
            raise RuntimeError("no queues attached")
        req.queue = self._next % len(self.queues)
        self._next += 1
        self._add(req)

    def _add(self, req: InFlight) -> None:
        index = req.queue
        backlog = self._backlog[index]
        if backlog:
            backlog.append(req)
            return
        try:
            self.queues[index].add(self._mem, req.readable, req.writable, req)
        except QueueFullError:
            backlog.append(req)
            return
        req.attempts += 1
        self._to_kick.add(index)

    def kick_all(self) -> None:
        for index in sorted(self._to_kick):
            kick(self._transport, self.queues[index], self._mem)
        self._to_kick.clear()

    @property
    def needs_kick(self) -> bool:
        return bool(self._to_kick)

    # ---------------------------------------------------------------- completion
    def reap(self) -> int:
        """Complete every used request (re-arming callbacks race-free, virtio 1.2
        2.7.10); refill rings from the backlogs. Returns how many completed. Raises
        `VirtqueueError` if the device returned something it should not have."""
        done = 0
        for index, queue in enumerate(self.queues):
            while True:
                items = queue.get_used_batch(self._mem, _REAP_BATCH)
                for req, _written in items:
                    self._complete(req)
                done += len(items)
                if items:
                    self._refill(index)
                elif not queue.enable_cb(self._mem):
                    break
        return done

    def _complete(self, req: InFlight) -> None:
        status = self._mem.read(req.status_addr, 1)[0]
        if req.future.done():  # the submitter gave up: nobody will free the buffers
            self._release(req)
        else:
            req.future.set_result(status)

    def _refill(self, index: int) -> None:
        backlog, queue = self._backlog[index], self.queues[index]
        while backlog:
            req = backlog[0]
            try:
                queue.add(self._mem, req.readable, req.writable, req)
            except QueueFullError:
                return
            backlog.popleft()
            req.attempts += 1
            self._to_kick.add(index)
