"""The driver's control queue (virtio 1.2 5.1.6.5): one command at a time, its
class/command/data readable, its ack byte writable, answered when the device uses it.

``command`` is a coroutine; `complete` runs from the driver's interrupt service."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import virtio_net as N
from xenvirtio.transport.dma import DmaBuffer
from xenvirtio.virtio.queue import DriverQueue

CTRL_TIMEOUT = 10.0
_ACK_UNSET = 0xFF


class CtrlError(Exception):
    """The device answered VIRTIO_NET_ERR, or did not answer in time."""


class ControlQueue:
    def __init__(self, queue: DriverQueue[Any], mem: GuestMemory, block: DmaBuffer) -> None:
        self.queue, self._mem, self._block = queue, mem, block
        self._lock = asyncio.Lock()
        self._waiting: asyncio.Future[int] | None = None
        self._ack_at = 0

    async def command(self, cls: int, cmd: int, data: bytes, kick: Any) -> None:
        """Send one command; ``kick()`` notifies the device. Raises `CtrlError`."""
        async with self._lock:
            size = 2 + len(data)
            if size + 1 > self._block.size:
                raise ValueError("control command too large")
            view = self._block.view
            view[:size] = struct.pack("BB", cls, cmd) + data
            view[size] = _ACK_UNSET
            self._ack_at = size
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiting = future
            self.queue.add(self._mem, [(self._block.addr, size)], [(self._block.addr + size, 1)], 0)
            kick()
            try:
                ack = await asyncio.wait_for(future, CTRL_TIMEOUT)
            except TimeoutError as err:
                raise CtrlError(f"control command {cls}/{cmd} timed out") from err
            finally:
                self._waiting = None
            if ack != N.VIRTIO_NET_OK:
                raise CtrlError(f"control command {cls}/{cmd} answered {ack}")

    def complete(self) -> None:
        """Collect the answer, if the device used the buffer."""
        for _token, _written in self.queue.get_used_batch(self._mem, 4):
            future = self._waiting
            if future is not None and not future.done():
                future.set_result(int(self._block.view[self._ack_at]))
