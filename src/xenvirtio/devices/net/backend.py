"""The device model's two ports to the outside, and their TAP implementation.

`NetBackend` is where frames go and come from: one non-blocking descriptor per queue
pair, each frame preceded by the 12-byte ``virtio_net_hdr`` (a TAP with IFF_VNET_HDR).
`Reactor` tells the device when a descriptor is readable; an asyncio event loop is one
as it is (``add_reader``/``remove_reader``/``call_soon``).

`TapBackend` is the backend Xen's ``vif-bridge`` hotplug builds for netback, with a TAP
in place of the vif: the TAP lives in the backend's namespace, enslaved to a bridge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from xenvirtio.mem.api import Buffer
from xenvirtio.netif.offload import guest_offloads
from xenvirtio.netif.tap import Tap


class Reactor(Protocol):
    """Readiness callbacks on the device's thread (an asyncio loop satisfies it)."""

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None: ...

    def remove_reader(self, fd: int) -> bool: ...

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Any: ...


class NetBackend(Protocol):
    """Where the device sends and receives frames (each with its vnet header)."""

    @property
    def queues(self) -> int:
        """Queue pairs the backend can serve (descriptors)."""
        ...

    def fileno(self, queue: int) -> int: ...

    def readv(self, queue: int, buffers: Sequence[Buffer]) -> int | None:
        """One frame into ``buffers``; None when none is waiting. Raises OSError."""
        ...

    def writev(self, queue: int, buffers: Sequence[Buffer]) -> int:
        """One frame from ``buffers``. Raises OSError when the stack refuses it."""
        ...

    def set_offload(self, features: int) -> None:
        """The driver negotiated ``features``: accept exactly its receive offloads."""
        ...

    def set_link(self, up: bool) -> None: ...

    def set_active_queues(self, count: int) -> None:
        """Only the first ``count`` queues get frames (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET)."""
        ...


class TapBackend:
    """A `NetBackend` over a `Tap` (``queues`` TAP queues for as many pairs)."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.active = tap.queues

    @property
    def queues(self) -> int:
        return self.tap.queues

    def fileno(self, queue: int) -> int:
        return self.tap.fds[queue]

    def readv(self, queue: int, buffers: Sequence[Buffer]) -> int | None:
        try:
            return os.readv(self.tap.fds[queue], buffers)
        except BlockingIOError:
            return None

    def writev(self, queue: int, buffers: Sequence[Buffer]) -> int:
        return os.writev(self.tap.fds[queue], buffers)

    def set_offload(self, features: int) -> None:
        self.tap.set_offload(guest_offloads(features))

    def set_link(self, up: bool) -> None:
        self.tap.set_carrier(up)

    def set_active_queues(self, count: int) -> None:
        if self.tap.queues == 1:
            return
        for queue in range(self.tap.queues):
            self.tap.set_queue_enabled(queue, queue < count)
        self.active = count
