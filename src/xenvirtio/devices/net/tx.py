"""Transmit path of one queue pair: transmitqN to the backend (virtio 1.2 5.1.6.2).

Each chain is [virtio_net_hdr][frame] in its readable part. The 12 header bytes are
copied and checked (`header.check_tx`); the frame itself is never copied: the backend
gets ``writev(sanitized header, *zero-copy views of the guest's frame)``. A frame that
fails a check is dropped and counted, and its buffer returned: a hostile guest loses
its own frames, nothing else. Chains are popped in batches, returned with one used
index update and at most one interrupt per batch.
"""

from __future__ import annotations

from collections.abc import Callable

from xenvirtio.devices.net.backend import NetBackend, Reactor
from xenvirtio.devices.net.header import TxDrop, TxLimits, check_tx, tx_to_tap
from xenvirtio.devices.net.stats import NetStats
from xenvirtio.mem.api import Buffer, GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio_net as N
from xenvirtio.spec.virtio_net import VirtioNetHdr
from xenvirtio.transport.api import ActivationContext
from xenvirtio.virtio.queue import DescriptorChain, DeviceQueue, VirtqueueError

TX_BATCH = 64
IOV_LIMIT = 1000


class TxPath:
    """transmitq(pair+1) into backend queue ``pair``. Runs on the device's thread."""

    def __init__(
        self,
        pair: int,
        backend: NetBackend,
        reactor: Reactor,
        stats: NetStats,
        fail: Callable[[str], None],
    ) -> None:
        self.pair, self.index = pair, N.tx_queue(pair)
        self._backend, self._reactor = backend, reactor
        self._stats, self._fail = stats, fail
        self._ctx: ActivationContext | None = None
        self._queue: DeviceQueue | None = None
        self._limits = TxLimits(0, 0)
        self._scheduled = False
        self.link_up = True

    def start(self, ctx: ActivationContext, queue: DeviceQueue, limits: TxLimits) -> None:
        self._ctx, self._queue, self._limits = ctx, queue, limits
        self._scheduled = False

    def stop(self) -> None:
        self._ctx = self._queue = None

    def kick(self) -> None:
        """Serve what is available: at most four rounds of Queue Size per call, then
        the rest later on the reactor (one guest cannot hold the device)."""
        self._scheduled = False
        ctx, queue = self._ctx, self._queue
        if ctx is None or queue is None:
            return
        try:
            more = self._serve(ctx, queue)
        except (VirtqueueError, GuestMemoryError) as err:
            self.stop()
            self._fail(f"virtio-net transmitq{self.pair + 1}: {err}")
            return
        if more and not self._scheduled:
            self._scheduled = True
            self._reactor.call_soon(self.kick)

    def _serve(self, ctx: ActivationContext, queue: DeviceQueue) -> bool:
        mem = ctx.mem
        budget = 4 * queue.config.size
        while budget > 0:
            queue.disable_notification(mem)
            chains = queue.pop_batch(mem, min(TX_BATCH, budget))
            if chains:
                budget -= len(chains)
                for chain in chains:
                    self._send(mem, chain)
                queue.push_used_batch(mem, [(chain, 0) for chain in chains])
                if queue.needs_notify(mem):
                    self._stats.interrupts += 1
                    ctx.interrupt.trigger_queue(self.index)
            elif not queue.enable_notification(mem):  # empty, and nothing raced in
                return False
        return True

    def _send(self, mem: GuestMemory, chain: DescriptorChain) -> None:
        drop, frame_len = None, chain.readable_len - N.VIRTIO_NET_HDR_SIZE
        if frame_len < 0:
            drop = TxDrop.SHORT_CHAIN
        elif not self.link_up:
            drop = TxDrop.LINK_DOWN
        else:
            raw, frame = _split(mem, chain)
            hdr = VirtioNetHdr.unpack(raw)
            drop = check_tx(hdr, frame_len, self._limits)
        if drop is not None:
            self._stats.tx_dropped[drop.name] += 1
            return
        if len(frame) >= IOV_LIMIT:
            frame = [b"".join(frame)]  # a chain of tiny pieces: bounded by the size check
        try:
            self._backend.writev(self.pair, [tx_to_tap(hdr), *frame])
        except OSError:
            self._stats.tx_dropped[TxDrop.TAP_ERROR.name] += 1
            return
        self._stats.tx_frames += 1
        self._stats.tx_bytes += frame_len


def _split(mem: GuestMemory, chain: DescriptorChain) -> tuple[bytes, list[Buffer]]:
    """A copy of the header (the one copy checks use) and zero-copy views of the frame.
    The chain's segments were checked against guest memory when it was popped."""
    addr, length = chain.readable[0]
    if length < N.VIRTIO_NET_HDR_SIZE:  # a header split over descriptors
        reader = chain.reader(mem)
        return reader.read(N.VIRTIO_NET_HDR_SIZE), list(reader.views())
    raw = mem.read(addr, N.VIRTIO_NET_HDR_SIZE)
    frame: list[Buffer] = []
    if length > N.VIRTIO_NET_HDR_SIZE:
        frame.extend(mem.views(addr + N.VIRTIO_NET_HDR_SIZE, length - N.VIRTIO_NET_HDR_SIZE))
    for addr, length in chain.readable[1:]:
        if length:
            frame.extend(mem.views(addr, length))
    return raw, frame
