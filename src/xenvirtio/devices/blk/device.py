"""The virtio-blk device model: the control plane a transport drives (`VirtioDevice`) and
the data plane (pop, parse, execute, complete).

Threads: every method here runs on the device's own thread (the transport's edge), except
the completion callback an engine calls from its workers, which only appends to a
thread-safe deque and, outside ``queue_notify``, calls ``wakeup`` once so the edge runs
`poll` on the device's thread. `poll` writes status bytes, publishes each queue's used
buffers in one batch and raises one interrupt per queue per batch (``needs_notify``).

    call order: ( accept_features? activate ( queue_notify | poll
                  | queue_reset queue_enabled? )* )? reset ...

A request the parser rejects is answered IOERR/UNSUPP without touching the disk. A chain
without a status byte, or a ring fault, raises `VirtqueueError` out of ``queue_notify``
(the transport sets DEVICE_NEEDS_RESET); a fault found later goes through
``ctx.needs_reset``. Either way the device latches ``broken`` and serves nothing more
until reset; other devices sharing the engine are unaffected.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.devices.blk.engine import FAULT, OK, BlkEngine, SyncEngine
from xenvirtio.devices.blk.request import ParseError, Request, RequestLimits
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio_blk as B
from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.transport.api import ActivationContext, VirtioDevice
from xenvirtio.virtio.chain import Writer
from xenvirtio.virtio.config import ConfigSpace
from xenvirtio.virtio.queue import DescriptorChain, DeviceQueue, VirtqueueError

log = logging.getLogger(__name__)

POP_BATCH = 64
DRAIN_TIMEOUT = 60.0  # seconds a reset waits for in-flight I/O


class _Completion(NamedTuple):
    queue: int
    chain: DescriptorChain
    status_addr: int
    status: int


class VirtioBlkDevice:
    """A virtio-blk device over ``backing``. Implements `VirtioDevice`.

    ``engine`` runs requests (default `SyncEngine`); one engine may serve many devices.
    Set ``wakeup`` (a thread-safe callable) when the engine completes requests on other
    threads: it asks the edge to call `poll` on the device's thread.
    """

    def __init__(
        self,
        backing: BlockFile,
        config: BlkConfig | None = None,
        engine: BlkEngine | None = None,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        settings = config or BlkConfig()
        if backing.read_only and not settings.read_only:
            settings = replace(settings, read_only=True)
        self.backing = backing
        self.settings = settings
        self.engine: BlkEngine = engine or SyncEngine()
        self.wakeup = wakeup
        layout = settings.config_space(backing.size)
        self.capacity: int = layout.capacity
        self._config = ConfigSpace(layout.pack())
        self._features = settings.offered_features()
        self._ctx: ActivationContext | None = None
        self._limits: RequestLimits | None = None
        self.broken = False
        self._done: deque[_Completion] = deque()
        self._cv = threading.Condition()
        self._in_flight = [0] * settings.num_queues
        self._serving = False
        self._wakeup_pending = False

    # ------------------------------------------------------------ VirtioDevice: control
    @property
    def device_id(self) -> int:
        return int(VirtioDeviceId.BLOCK)

    @property
    def avail_features(self) -> int:
        return self._features

    @property
    def queue_max_sizes(self) -> Sequence[int]:
        return [self.settings.queue_size] * self.settings.num_queues

    @property
    def config(self) -> ConfigSpace:
        return self._config

    @property
    def active(self) -> bool:
        return self._ctx is not None

    def accept_features(self, features: int) -> bool:
        return True  # every subset of the offer works (the generic checks ran already)

    def activate(self, ctx: ActivationContext) -> None:
        self._ctx = ctx
        self._limits = self.settings.limits(self.capacity, ctx.features)
        self.broken = False

    def reset(self) -> None:
        """Wait for in-flight I/O (it writes into guest memory), then forget everything."""
        self._wait_idle(None)
        self._done.clear()
        self._ctx = self._limits = None
        self.broken = False

    def queue_reset(self, index: int) -> None:
        self._wait_idle(index)
        kept = [c for c in self._take_done() if c.queue != index]
        self._done.extend(kept)

    def queue_enabled(self, index: int, queue: DeviceQueue) -> None:
        """After RING_RESET (ctx.queues already holds ``queue``): serve what waits."""
        self.queue_notify(index)

    # ------------------------------------------------------------ data plane
    def queue_notify(self, index: int) -> None:
        ctx = self._ctx
        if ctx is None or self.broken or not 0 <= index < len(ctx.queues):
            return
        queue = ctx.queues[index]
        if queue is None:
            return
        self._serving = True
        try:
            self._serve(ctx, index, queue)
        except (VirtqueueError, GuestMemoryError):
            self.broken = True
            raise
        finally:
            self._serving = False  # before poll: see _finished
        self.poll()

    def _serve(self, ctx: ActivationContext, index: int, queue: DeviceQueue) -> None:
        """Pop until the ring is empty with notifications re-enabled (virtio 1.2 2.7.10:
        re-check after enabling, or a request made meanwhile would wait forever)."""
        mem = ctx.mem
        while True:
            queue.disable_notification(mem)
            while chains := queue.pop_batch(mem, POP_BATCH):
                for chain in chains:
                    self._start(ctx, index, chain)
            if not queue.enable_notification(mem):
                return

    def _start(self, ctx: ActivationContext, index: int, chain: DescriptorChain) -> None:
        assert self._limits is not None
        parsed = Request.parse(chain, ctx.mem, self._limits)
        if isinstance(parsed, ParseError):
            log.debug("virtio-blk queue %d: %s", index, parsed.reason)
            self._done.append(_Completion(index, chain, parsed.status_addr, parsed.status))
            return
        if parsed.type == B.VirtioBlkType.VIRTIO_BLK_T_GET_ID:
            status = self._get_id(ctx.mem, parsed)
            self._done.append(_Completion(index, chain, parsed.status_addr, status))
            return
        # A request the engine runs at once (a page-cache read) completes here: no
        # in-flight count, no callback; this queue_notify's closing poll returns it.
        now = self.engine.try_now(self.backing, parsed, ctx.mem)
        if now is not None:
            self._done.append(_Completion(index, chain, parsed.status_addr, now))
            return
        with self._cv:
            self._in_flight[index] += 1
        done = partial(self._finished, index, chain, parsed.status_addr)
        self.engine.submit(self.backing, parsed, ctx.mem, done)

    def _get_id(self, mem: GuestMemory, req: Request) -> int:
        ident = self.settings.serial_bytes.ljust(B.VIRTIO_BLK_ID_BYTES, b"\0")
        try:
            Writer(mem, req.data).write(ident)
        except (VirtqueueError, GuestMemoryError):
            return FAULT
        return OK

    def _finished(self, index: int, chain: DescriptorChain, status_addr: int, status: int) -> None:
        """Engine callback, any thread. Append first, then decide on a wakeup: if the
        owner is still serving, its closing `poll` will see this completion."""
        self._done.append(_Completion(index, chain, status_addr, status))
        with self._cv:
            self._in_flight[index] -= 1
            if not self._in_flight[index]:
                self._cv.notify_all()
        wakeup = self.wakeup
        if wakeup is not None and not self._serving and not self._wakeup_pending:
            self._wakeup_pending = True
            wakeup()

    def _take_done(self) -> list[_Completion]:
        items = []
        while self._done:
            items.append(self._done.popleft())
        return items

    def poll(self) -> None:
        """Complete finished requests: status bytes, one used batch and at most one
        interrupt per queue. Runs on the device's thread."""
        self._wakeup_pending = False
        items = self._take_done()
        ctx = self._ctx
        if not items or ctx is None or self.broken:
            return
        try:
            used = self._write_statuses(ctx, items)
            for index, batch in used.items():
                queue = ctx.queues[index]
                if queue is None:
                    continue
                queue.push_used_batch(ctx.mem, batch)
                if queue.needs_notify(ctx.mem):
                    ctx.interrupt.trigger_queue(index)
        except (VirtqueueError, GuestMemoryError) as err:
            self.broken = True
            ctx.needs_reset(f"virtio-blk: {err}")

    @staticmethod
    def _write_statuses(
        ctx: ActivationContext, items: list[_Completion]
    ) -> dict[int, list[tuple[DescriptorChain, int]]]:
        used: dict[int, list[tuple[DescriptorChain, int]]] = {}
        for item in items:
            if item.status == FAULT:
                raise GuestMemoryError(item.status_addr, 0, "request buffers vanished")
            ctx.mem.write(item.status_addr, bytes((item.status,)))
            # The used length counts the writable bytes: data (IN, GET_ID) and status.
            used.setdefault(item.queue, []).append((item.chain, item.chain.writable_len))
        return used

    def _wait_idle(self, index: int | None) -> None:
        def idle() -> bool:
            if index is None:
                return not any(self._in_flight)
            return not self._in_flight[index]

        with self._cv:
            if not self._cv.wait_for(idle, timeout=DRAIN_TIMEOUT):
                log.error("virtio-blk: in-flight I/O did not finish in %s s", DRAIN_TIMEOUT)


if TYPE_CHECKING:

    def _conforms(device: VirtioBlkDevice) -> VirtioDevice:
        return device
