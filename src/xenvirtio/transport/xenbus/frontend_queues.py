"""What a frontend's driver programmed for its queues, and what DRIVER_OK publishes. Pure.

Between FEATURES_OK and DRIVER_OK a driver sets each queue's size and ring addresses
and enables it (virtio 1.2 3.1.1 step 7); nothing reaches the backend until DRIVER_OK,
when the enabled queues, each with the event channel made for it, become the
`FrontendSetup` the backend reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xenvirtio.transport.xenbus.keys import TRANSPORT_VERSION
from xenvirtio.transport.xenbus.records import FrontendSetup, QueueSetup


@dataclass
class _Queue:
    size: int = 0
    desc: int = 0
    driver: int = 0
    device: int = 0
    enabled: bool = False


class QueueRegisters:
    """Queue index -> what the driver set (only queues it touched)."""

    def __init__(self) -> None:
        self._queues: dict[int, _Queue] = {}

    def setup(self, index: int, size: int, desc: int, driver: int, device: int) -> None:
        q = self._queues.setdefault(index, _Queue())
        q.size, q.desc, q.driver, q.device = size, desc, driver, device

    def enable(self, index: int) -> None:
        self._queues.setdefault(index, _Queue()).enabled = True

    def clear(self) -> None:
        self._queues.clear()

    def enabled(self) -> list[int]:
        return sorted(i for i, q in self._queues.items() if q.enabled)

    def publishable(self, features: int, ports: Mapping[int, int]) -> FrontendSetup:
        """The keys DRIVER_OK publishes; ``ports[i]`` is enabled queue i's event channel."""
        enabled = self.enabled()
        queues = tuple(
            QueueSetup(i, q.size, q.desc, q.driver, q.device, ports[i])
            for i in enabled
            for q in (self._queues[i],)
        )
        count = enabled[-1] + 1 if enabled else 1
        return FrontendSetup(TRANSPORT_VERSION, features, count, queues)
