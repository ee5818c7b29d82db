"""The driver's receive queues: fixed DMA buffers posted to receiveqN, frames written to
the guest's TAP straight from them (virtio 1.2 5.1.6.3, 5.1.6.4).

Buffers are ``buf_size`` bytes each, carved out of one DMA block per queue and reposted
as soon as their frame is delivered. With VIRTIO_NET_F_MRG_RXBUF a frame arrives as
``num_buffers`` used buffers in a row (possibly across interrupts); the driver gathers
them and hands the TAP ``writev(header + data...)``. The device is not trusted: a used
length under the header, a ``num_buffers`` of 0 or beyond the ring, or an offload the
driver did not negotiate drops the frame (counted), never the driver.
"""

from __future__ import annotations

import os
from typing import Any

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import virtio_net as N
from xenvirtio.transport.dma import DmaBuffer
from xenvirtio.virtio.queue import DriverQueue, QueueFullError

_BATCH = 256


def _allowed_gso(features: int) -> frozenset[int]:
    """The gso_type values (ECN bit aside) the driver may receive (5.1.6.4.2)."""
    allowed = {N.VIRTIO_NET_HDR_GSO_NONE}
    for gso, feature in (
        (N.VIRTIO_NET_HDR_GSO_TCPV4, N.VIRTIO_NET_F_GUEST_TSO4),
        (N.VIRTIO_NET_HDR_GSO_TCPV6, N.VIRTIO_NET_F_GUEST_TSO6),
        (N.VIRTIO_NET_HDR_GSO_UDP, N.VIRTIO_NET_F_GUEST_UFO),
    ):
        if features >> feature & 1:
            allowed.add(gso)
    return frozenset(allowed)


def rx_header_ok(raw: bytes, features: int) -> bool:
    """Whether a received header uses only negotiated offloads (5.1.6.4.2)."""
    return _header_ok(raw[0], raw[1], features, _allowed_gso(features))


def _header_ok(flags: int, gso_type: int, features: int, allowed: frozenset[int]) -> bool:
    if flags & N.VIRTIO_NET_HDR_F_NEEDS_CSUM and not features >> N.VIRTIO_NET_F_GUEST_CSUM & 1:
        return False
    return gso_type & ~N.VIRTIO_NET_HDR_GSO_ECN in allowed


class RxRing:
    """receiveq(pair+1) of one driver, delivering to guest TAP descriptor ``fd``."""

    def __init__(
        self,
        queue: DriverQueue[Any],
        mem: GuestMemory,
        block: DmaBuffer,
        buf_size: int,
        fd: int,
        features: int,
    ) -> None:
        self.queue, self._mem, self._fd = queue, mem, fd
        self._features = features
        self._allowed = _allowed_gso(features)
        self._mrg = bool(features >> N.VIRTIO_NET_F_MRG_RXBUF & 1)
        count = block.size // buf_size
        self._bufs = [
            (block.addr + i * buf_size, block.view[i * buf_size : (i + 1) * buf_size])
            for i in range(count)
        ]
        self._size = buf_size
        self._free = list(range(count))
        self._pending: list[tuple[int, int]] = []  # (buffer, written) of a frame so far
        self._expect = 0  # num_buffers of the frame being gathered
        self.frames = self.bytes = 0
        self.dropped: dict[str, int] = {}

    @property
    def posted(self) -> int:
        return len(self._bufs) - len(self._free)

    def fill(self) -> bool:
        """Post every free buffer the ring takes; returns whether any was posted."""
        added = False
        while self._free:
            index = self._free[-1]
            try:
                self.queue.add(self._mem, (), [(self._bufs[index][0], self._size)], index)
            except QueueFullError:
                break
            self._free.pop()
            added = True
        return added

    def collect(self) -> int:
        """Deliver every frame the device completed; returns used buffers seen."""
        seen = 0
        while True:
            items = self.queue.get_used_batch(self._mem, _BATCH)
            seen += len(items)
            for index, written in items:
                self._take(index, written)
            if len(items) < _BATCH:
                return seen

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _take(self, index: int, written: int) -> None:
        if not self._pending:
            if written < N.VIRTIO_NET_HDR_SIZE:
                self._drop("short buffer")
                self._free.append(index)
                return
            view = self._bufs[index][1]
            count = N.VIRTIO_NET_HDR_NUM_BUFFERS.unpack_from(view, N.HDR_NUM_BUFFERS)[0]
            self._expect = count if self._mrg else 1
            if not 1 <= self._expect <= len(self._bufs):
                self._drop("bad num_buffers")
                self._free.append(index)
                return
        self._pending.append((index, written))
        if len(self._pending) == self._expect:
            self._deliver()

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        first = self._bufs[pending[0][0]][1]
        if not _header_ok(first[0], first[1], self._features, self._allowed):
            self._drop("offload not negotiated")
        else:
            views = [self._bufs[i][1][:n] for i, n in pending if n]
            try:
                os.writev(self._fd, views)
                self.frames += 1
                self.bytes += sum(n for _, n in pending) - N.VIRTIO_NET_HDR_SIZE
            except OSError as err:
                self._drop(f"tap write errno {err.errno}")
        self._free.extend(i for i, _ in pending)

    def detach(self) -> None:
        """After a device reset: every buffer is free again."""
        self.queue.detach_unused()
        self._pending.clear()
        self._free = list(range(len(self._bufs)))
