"""Receive path of one queue pair: frames from the backend into receiveqN (virtio 1.2
5.1.6.3, 5.1.6.4).

The device pops receive buffers ahead of need and keeps them (the stash) until a frame
lands in them, so a dropped frame costs the driver nothing. Each frame is read straight
into the stashed guest buffers with one ``readv``: the first 26 bytes (virtio header and
Ethernet header) into host memory, the rest into guest memory, then a host scratch
buffer that catches a frame too large for the buffers (dropped). The filter and header
decisions use only the host copies; the header the driver sees is written afterwards.

With VIRTIO_NET_F_MRG_RXBUF a frame spreads over as many buffers as it needs, all but
the last filled completely, ``num_buffers`` counting them (5.1.6.4.2); without it one
buffer holds one frame and ``num_buffers`` is 1. When the stash cannot hold the largest
frame the negotiated features allow, receive stops (the backend queues, then drops) and
the device asks for a kick; the driver's next refill resumes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from xenvirtio.devices.net.backend import NetBackend, Reactor
from xenvirtio.devices.net.ctrl import RxFilter
from xenvirtio.devices.net.header import rx_from_tap
from xenvirtio.devices.net.stats import NetStats
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio_net as N
from xenvirtio.transport.api import ActivationContext
from xenvirtio.virtio.queue import DescriptorChain, DeviceQueue, VirtqueueError

RX_BUDGET = 64  # frames per readiness callback: other queues and guests get their turn
IOV_LIMIT = 1000  # below the kernel's IOV_MAX (1024)
PREFIX = N.VIRTIO_NET_HDR_SIZE + N.ETH_HLEN
_SCRATCH = 1 << 17  # larger than any frame a TAP gives


class RxBufferError(VirtqueueError):
    """A receive buffer shorter than ``virtio_net_hdr`` (5.1.6.3.1), or not writable."""


class _Buffer:
    __slots__ = ("cap", "chain", "views")

    def __init__(self, chain: DescriptorChain, mem: GuestMemory) -> None:
        # Zero-copy views of the writable segments, checked when the chain was popped.
        self.chain, self.cap = chain, chain.writable_len
        self.views = [v for addr, n in chain.writable if n for v in mem.views(addr, n)]


def _skip(views: list[memoryview], n: int) -> list[memoryview]:
    out: list[memoryview] = []
    for view in views:
        if n >= len(view):
            n -= len(view)
            continue
        out.append(view[n:] if n else view)
        n = 0
    return out


def _scatter(data: bytes, views: list[memoryview]) -> None:
    pos = 0
    for view in views:
        if pos >= len(data):
            return
        chunk = min(len(view), len(data) - pos)
        view[:chunk] = data[pos : pos + chunk]
        pos += chunk


class RxPath:
    """receiveq(pair+1) fed from backend queue ``pair``. Runs on the device's thread."""

    def __init__(
        self,
        pair: int,
        backend: NetBackend,
        reactor: Reactor,
        stats: NetStats,
        rx_filter: RxFilter,
        fail: Callable[[str], None],
    ) -> None:
        self.pair, self.index = pair, N.rx_queue(pair)
        self._backend, self._reactor = backend, reactor
        self._stats, self._filter, self._fail = stats, rx_filter, fail
        self._stash: deque[_Buffer] = deque()
        self._stashed = 0  # bytes of writable room in the stash
        self._stashed_views = 0
        self._prefix = bytearray(PREFIX)
        self._prefix_view = memoryview(self._prefix)
        self._scratch = memoryview(bytearray(_SCRATCH))
        self._ctx: ActivationContext | None = None
        self._queue: DeviceQueue | None = None
        self._features = 0
        self._room = 0
        self._mrg = False
        self._watching = False
        self.stalled = False
        self.active = pair == 0  # 5.1.6.5.6.2: only receiveq1 until VQ_PAIRS_SET

    # ---------------------------------------------------------------- control
    def start(self, ctx: ActivationContext, queue: DeviceQueue, room: int) -> None:
        """Serve ``queue`` (when `active`); ``room`` is the largest frame plus header
        to be ready for."""
        self.stop()
        self._ctx, self._queue, self._room = ctx, queue, room
        self._features = ctx.features
        self._mrg = bool(ctx.features >> N.VIRTIO_NET_F_MRG_RXBUF & 1)
        queue.disable_notification(ctx.mem)  # kicks are wanted only while stalled
        self.stalled = False
        if self.active:
            self._watch()

    def stop(self) -> None:
        """Forget the queue and the stash (reset, RING_RESET)."""
        self._unwatch()
        self._stash.clear()
        self._stashed = self._stashed_views = 0
        self._ctx = self._queue = None

    def set_active(self, active: bool) -> None:
        """Pair enabled or disabled by VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: receive stops,
        the stash is kept (those buffers stay the driver's, used when it comes back)."""
        self.active = active
        if not active:
            self._unwatch()
        elif self._queue is not None:
            self.kick()

    def kick(self) -> None:
        """The driver added buffers (it kicks only after a stall asked it to)."""
        if self._queue is not None and self.active and not self._watching:
            self.stalled = False
            self._watch()
            self._reactor.call_soon(self.on_readable)

    def _watch(self) -> None:
        if not self._watching:
            self._reactor.add_reader(self._backend.fileno(self.pair), self.on_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._reactor.remove_reader(self._backend.fileno(self.pair))
            self._watching = False

    # ---------------------------------------------------------------- data
    def on_readable(self) -> None:
        ctx, queue = self._ctx, self._queue
        if ctx is None or queue is None or not self._watching:
            return
        used: list[tuple[DescriptorChain, int]] = []
        try:
            for _ in range(RX_BUDGET):
                if not self._fill(ctx.mem, queue):
                    self._stall()
                    break
                if not self._receive(used):
                    break
            if used:
                queue.push_used_batch(ctx.mem, used)
                if queue.needs_notify(ctx.mem):
                    self._stats.interrupts += 1
                    ctx.interrupt.trigger_queue(self.index)
        except (VirtqueueError, GuestMemoryError) as err:
            self.stop()
            self._fail(f"virtio-net receiveq{self.pair + 1}: {err}")

    def _stall(self) -> None:
        self._unwatch()
        self.stalled = True
        self._stats.rx_stalls += 1

    def _fill(self, mem: GuestMemory, queue: DeviceQueue) -> bool:
        """Stash buffers until the largest frame fits (one buffer without MRG_RXBUF).
        False when the driver has not given enough: notifications are then enabled."""
        if self._ready():
            return True
        while True:
            chain = queue.pop(mem)
            if chain is None:
                if queue.enable_notification(mem):  # buffers arrived meanwhile (2.7.10)
                    continue
                return False
            if chain.writable_len < N.VIRTIO_NET_HDR_SIZE:
                raise RxBufferError(f"receive buffer of {chain.writable_len} bytes")
            buf = _Buffer(chain, mem)
            self._stash.append(buf)
            self._stashed += buf.cap
            self._stashed_views += len(buf.views)
            if self._ready():
                queue.disable_notification(mem)
                return True

    def _ready(self) -> bool:
        if not self._mrg:
            return bool(self._stash)
        return self._stashed >= self._room or self._stashed_views >= IOV_LIMIT

    def _landing(self) -> tuple[list[memoryview], int]:
        """The iovec for the next frame and the guest room it offers."""
        first = self._stash[0]
        if not self._mrg or first.cap >= self._room:  # one buffer takes any frame
            return [self._prefix_view, *_skip(first.views, PREFIX), self._scratch], first.cap
        buffers = list(self._stash)
        views: list[memoryview] = []
        room = 0
        for buf in buffers:
            if len(views) + len(buf.views) > IOV_LIMIT:
                break
            views.extend(buf.views)
            room += buf.cap
        iov = [self._prefix_view, *_skip(views, PREFIX), self._scratch]
        return iov, room

    def _receive(self, used: list[tuple[DescriptorChain, int]]) -> bool:
        """Read one frame; False when the backend has none waiting."""
        iov, room = self._landing()
        try:
            n = self._backend.readv(self.pair, iov)
        except OSError as err:
            self._stats.rx_dropped[f"read error {err.errno}"] += 1
            return False
        if n is None:
            return False
        if n > room or n < PREFIX:
            self._stats.rx_dropped["oversized" if n > room else "runt"] += 1
            return True
        if not self._filter.accepts(bytes(self._prefix[N.VIRTIO_NET_HDR_SIZE :][:6])):
            self._stats.rx_dropped["filtered"] += 1
            return True
        count, lengths = self._spread(n)
        hdr = rx_from_tap(bytes(self._prefix[: N.VIRTIO_NET_HDR_SIZE]), self._features, count)
        if hdr is None:
            self._stats.rx_dropped["offload not negotiated"] += 1
            return True
        first: list[memoryview] = []
        for length in lengths:
            buf = self._stash.popleft()
            self._stashed -= buf.cap
            self._stashed_views -= len(buf.views)
            first.extend(buf.views)
            used.append((buf.chain, length))
        _scatter(hdr + bytes(self._prefix[N.VIRTIO_NET_HDR_SIZE :]), first)
        self._stats.rx_frames += 1
        self._stats.rx_bytes += n - N.VIRTIO_NET_HDR_SIZE
        return True

    def _spread(self, n: int) -> tuple[int, list[int]]:
        """How many stashed buffers ``n`` bytes fill, and the bytes in each."""
        lengths: list[int] = []
        for buf in self._stash:
            take = min(buf.cap, n)
            lengths.append(take)
            n -= take
            if not n:
                break
        return len(lengths), lengths
