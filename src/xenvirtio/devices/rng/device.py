"""The virtio-rng device model (virtio 1.2 5.4): the control plane a transport drives
(`VirtioDevice`) and the data plane (pop a request, draw bytes, fill, complete).

Generic over its `EntropySource`; rate limiting asks an injected `TimerPort` for
``now`` and for one wake-up, so tests run it on a simulated clock.

    call order: ( accept_features? activate ( queue_notify | timer wake-up
                  | queue_reset queue_enabled? )* )? reset ...

Each request is filled with up to its size (at most ``max_fill``) in one go; under a rate
limit with less than that in the bucket it gets what is there (at least
``grant_quantum`` bytes or the whole buffer if smaller; 5.4.6.2: one or more bytes, less
than the buffer allowed). With too little, the device keeps that one request popped and
sets a wake-up for when enough tokens have accumulated; the bucket outlives a device
reset, so resetting cannot refill it.

A request with device-readable descriptors (5.4.6.1) or a ring fault raises
`VirtqueueError` out of ``queue_notify`` (the transport sets DEVICE_NEEDS_RESET); found
during a timer wake-up it goes through ``ctx.needs_reset``. Either way the device serves
nothing more until reset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from xenvirtio.devices.rng.config import RngConfig
from xenvirtio.devices.rng.engine import EntropySource, OsEntropy, TimerPort
from xenvirtio.devices.rng.ratelimit import TokenBucket
from xenvirtio.devices.rng.request import EntropyRequest
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio_rng as R
from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.transport.api import ActivationContext, VirtioDevice
from xenvirtio.virtio.config import ConfigSpace
from xenvirtio.virtio.queue import DescriptorChain, DeviceQueue, VirtqueueError

log = logging.getLogger(__name__)

SOURCE_RETRY = 0.1  # seconds before asking a failing entropy source again


class VirtioRngDevice:
    """An entropy device. Implements `VirtioDevice`. ``timer`` is required with a rate
    limit (and lets the device retry a failing source); ``delivered`` counts the bytes
    handed to the guest since construction, ``dropped`` the requests returned empty."""

    def __init__(
        self,
        source: EntropySource | None = None,
        config: RngConfig | None = None,
        timer: TimerPort | None = None,
    ) -> None:
        self.settings = config or RngConfig()
        limit = self.settings.rate_limit
        if limit is not None and timer is None:
            raise ValueError("a rate-limited device needs a timer")
        self.source: EntropySource = source or OsEntropy()
        self.timer = timer
        self._bucket = TokenBucket(limit, timer.now()) if limit and timer else None
        self._config = ConfigSpace(b"")  # 5.4.4: none defined
        self._ctx: ActivationContext | None = None
        self._waiting: EntropyRequest | None = None
        self.broken = False
        self.delivered = 0
        self.dropped = 0

    # ------------------------------------------------------------ VirtioDevice: control
    @property
    def device_id(self) -> int:
        return int(VirtioDeviceId.ENTROPY)

    @property
    def avail_features(self) -> int:
        return self.settings.offered_features()

    @property
    def queue_max_sizes(self) -> Sequence[int]:
        return [self.settings.queue_size] * R.NUM_QUEUES

    @property
    def config(self) -> ConfigSpace:
        return self._config

    @property
    def active(self) -> bool:
        return self._ctx is not None

    def accept_features(self, features: int) -> bool:
        return True  # no device features: every ring subset of the offer works

    def activate(self, ctx: ActivationContext) -> None:
        self._ctx = ctx
        self.broken = False
        self.queue_notify(R.REQUESTQ)  # buffers may be waiting already

    def reset(self) -> None:
        self._forget()
        self._ctx = None
        self.broken = False

    def queue_reset(self, index: int) -> None:
        if index == R.REQUESTQ:
            self._forget()

    def queue_enabled(self, index: int, queue: DeviceQueue) -> None:
        self.queue_notify(index)

    def _forget(self) -> None:
        """The held request belongs to a ring that is going away."""
        self._waiting = None
        if self.timer is not None:
            self.timer.cancel()

    # ------------------------------------------------------------ data plane
    def queue_notify(self, index: int) -> None:
        ctx = self._ctx
        if ctx is None or self.broken or index != R.REQUESTQ:
            return
        queue = ctx.queues[index]
        if queue is None:
            return
        try:
            self._serve(ctx, queue)
        except (VirtqueueError, GuestMemoryError):
            self.broken = True
            raise

    def _wake(self) -> None:
        """Timer callback: tokens (or the source) should be there now."""
        ctx = self._ctx
        if ctx is None or self.broken:
            return
        queue = ctx.queues[R.REQUESTQ]
        if queue is None:
            return
        try:
            self._serve(ctx, queue)
        except (VirtqueueError, GuestMemoryError) as err:
            self.broken = True
            ctx.needs_reset(f"virtio-rng: {err}")

    def _serve(self, ctx: ActivationContext, queue: DeviceQueue) -> None:
        """Fill requests until the ring is empty (re-checked after re-enabling
        notifications, virtio 1.2 2.7.10) or the bucket runs dry. Bounded to four
        rounds of Queue Size per call, so one kick cannot keep the device busy forever."""
        mem = ctx.mem
        used: list[tuple[DescriptorChain, int]] = []
        for _ in range(4 * queue.config.size):
            req = self._next_request(mem, queue)
            if req is None:
                break
            written = self._fill(mem, req)
            if written is None:
                break
            used.append((req.chain, written))
        if used:
            queue.push_used_batch(mem, used)
            if queue.needs_notify(mem):
                ctx.interrupt.trigger_queue(R.REQUESTQ)

    def _next_request(self, mem: GuestMemory, queue: DeviceQueue) -> EntropyRequest | None:
        if self._waiting is not None:
            req, self._waiting = self._waiting, None
            return req
        chain = queue.pop(mem)
        if chain is None and queue.enable_notification(mem):
            chain = queue.pop(mem)
        if chain is None:
            return None
        return EntropyRequest.parse(chain, self.settings.max_fill)

    def _fill(self, mem: GuestMemory, req: EntropyRequest) -> int | None:
        """Bytes written into ``req``; None when it must wait (kept as ``_waiting``)."""
        if req.empty:
            self.dropped += 1
            return 0
        grant = self._grant(req)
        data = self._draw(grant) if grant else b""
        if not data:
            self._waiting = req
            self._arm(req, retry=bool(grant))
            return None
        req.chain.writer(mem).write(data)
        self.delivered += len(data)
        return len(data)

    def _quantum(self, req: EntropyRequest) -> int:
        limit = self.settings.rate_limit
        burst = limit.burst if limit is not None else req.length
        return min(req.length, self.settings.grant_quantum, burst)

    def _grant(self, req: EntropyRequest) -> int:
        if self._bucket is None or self.timer is None:
            return req.length
        return self._bucket.take(req.length, self.timer.now(), self._quantum(req))

    def _draw(self, n: int) -> bytes:
        try:
            data = self.source.read(n)
        except OSError as err:
            log.warning("virtio-rng: entropy source failed: %s", err)
            return b""
        return bytes(data[:n])

    def _arm(self, req: EntropyRequest, retry: bool) -> None:
        """Wake up when the bucket holds a quantum again (or to retry the source).
        Without a timer a failed source is retried at the next kick."""
        timer = self.timer
        if timer is None:
            return
        now = timer.now()
        if retry or self._bucket is None:
            delay = SOURCE_RETRY
        else:
            delay = self._bucket.delay(self._quantum(req), now)
        timer.call_at(now + delay, self._wake)


if TYPE_CHECKING:
    _conforms: VirtioDevice = VirtioRngDevice()
