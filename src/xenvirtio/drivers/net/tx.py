"""The driver's transmit queues: frames read from the guest's TAP straight into DMA
buffers and put on transmitqN (virtio 1.2 5.1.6.2).

The TAP hands each frame with its vnet header (offloads as ``TUNSETOFFLOAD`` allowed,
which the driver set from the negotiated features), so the buffer is the virtio chain
as it is: one readable descriptor, header then frame. The driver still clears what it
may not send: ``num_buffers`` (the TAP leaves those two bytes untouched) and
DATA_VALID/RSC_INFO (5.1.6.2.1).

Completed buffers are reaped on the next transmit round, not by interrupt; only when
every buffer is in flight does the ring ask for an interrupt and stop reading the TAP.
"""

from __future__ import annotations

import os
from typing import Any

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import virtio_net as N
from xenvirtio.transport.dma import DmaBuffer
from xenvirtio.virtio.queue import DriverQueue, QueueFullError

TX_ROUND = 64  # frames read from the TAP per round
_REAP_BATCH = 256
_ALLOWED_FLAGS = N.VIRTIO_NET_HDR_F_NEEDS_CSUM


class TxRing:
    """transmitq(pair+1) of one driver, fed from guest TAP descriptor ``fd``."""

    def __init__(
        self, queue: DriverQueue[Any], mem: GuestMemory, block: DmaBuffer, buf_size: int, fd: int
    ) -> None:
        self.queue, self._mem, self._fd = queue, mem, fd
        count = block.size // buf_size
        self._bufs = [
            (block.addr + i * buf_size, block.view[i * buf_size : (i + 1) * buf_size])
            for i in range(count)
        ]
        self._free = list(range(count))
        self.frames = self.bytes = 0
        self.errors = 0

    @property
    def stalled(self) -> bool:
        return not self._free

    def reap(self) -> int:
        done = 0
        while len(self._free) < len(self._bufs):  # buffers in flight
            items = self.queue.get_used_batch(self._mem, _REAP_BATCH)
            self._free.extend(index for index, _ in items if isinstance(index, int))
            done += len(items)
            if len(items) < _REAP_BATCH:
                break
        return done

    def pump(self) -> tuple[int, bool]:
        """Move up to `TX_ROUND` frames from the TAP to the ring. Returns the frames
        added and whether the TAP may hold more (False: it ran dry)."""
        added = 0
        while added < TX_ROUND and self._free:
            index = self._free[-1]
            addr, view = self._bufs[index]
            try:
                n = os.readv(self._fd, [view])
            except BlockingIOError:
                return added, False
            except OSError:
                self.errors += 1
                return added, False
            if n < N.VIRTIO_NET_HDR_SIZE:
                self.errors += 1
                continue
            view[0] &= _ALLOWED_FLAGS
            view[N.HDR_NUM_BUFFERS : N.VIRTIO_NET_HDR_SIZE] = b"\0\0"
            try:
                self.queue.add(self._mem, [(addr, n)], (), index)
            except QueueFullError:  # cannot happen with one descriptor per buffer
                self.errors += 1
                continue
            self._free.pop()
            added += 1
            self.frames += 1
            self.bytes += n - N.VIRTIO_NET_HDR_SIZE
        return added, True

    def detach(self) -> None:
        self.queue.detach_unused()
        self._free = list(range(len(self._bufs)))
