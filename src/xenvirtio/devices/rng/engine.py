"""The I/O edges of virtio-rng: where the random bytes come from, and the timer that
ends a rate-limit wait.

`EntropySource` is the port the device is generic over (compare vhost-device-rng's
``ReadVolatile`` source): the host CSPRNG in production (`OsEntropy`), anything
deterministic in tests. `TimerPort` gives the device ``now`` and one wake-up;
`LoopTimer` implements it on an asyncio loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Protocol


class EntropySource(Protocol):
    def read(self, n: int) -> bytes:
        """Up to ``n`` (normally exactly ``n``) random bytes; may raise OSError."""
        ...


class OsEntropy:
    """The host kernel's CSPRNG: ``getrandom(2)`` (``os.urandom`` where it is missing).
    Blocks only before the host's pool was ever initialised, as getrandom does."""

    def read(self, n: int) -> bytes:
        if hasattr(os, "getrandom"):
            return os.getrandom(n)
        return os.urandom(n)


class TimerPort(Protocol):
    """Time and one pending wake-up for a device (its thread calls both)."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` at ``when`` (monotonic seconds), on the device's thread,
        replacing any wake-up set earlier."""
        ...

    def cancel(self) -> None:
        """Forget the pending wake-up, if any."""
        ...


class LoopTimer:
    """`TimerPort` on an asyncio loop (``loop.time()`` is monotonic)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self._loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        self.cancel()
        self._handle = self._loop.call_at(when, callback)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
