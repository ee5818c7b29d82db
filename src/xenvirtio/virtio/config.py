"""Device configuration space with ``config_generation`` (virtio 1.2 2.5).

The device side owns the bytes and bumps the generation whenever a change is visible, so
a driver reading several fields (or one wider than 32 bits) can tell a torn read from a
consistent one. The driver side reads with `read_consistent`, which retries until the
generation is stable, a bounded number of times (a device that never settles is an error,
not a hang).

A device that must act on a driver's write (virtio-console's ``emerg_wr``, 5.3.4) passes
``on_driver_write``: it sees every in-range driver write first and may take it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from xenvirtio.mem.api import Buffer

R = TypeVar("R")

DriverWriteHook = Callable[[int, bytes], bool]
"""``(offset, data) -> taken``: called with each driver write inside the space. True: the
device took the write (a write-only register: nothing is stored, the field keeps
reading what it held); False: the write goes on to the driver-writable ranges."""


class ConfigAccessError(Exception):
    """An access outside the configuration space."""


class ConfigUnstableError(Exception):
    """The generation kept changing while the driver read (virtio 1.2 2.5.1)."""


class ConfigSpace:
    """The device's configuration space: ``size`` bytes, some ranges driver-writable,
    and an optional ``on_driver_write`` hook (`DriverWriteHook`)."""

    def __init__(
        self,
        initial: Buffer,
        driver_writable: Iterable[tuple[int, int]] = (),
        on_driver_write: DriverWriteHook | None = None,
    ) -> None:
        self._data = bytearray(initial)
        self._writable = [(off, off + n) for off, n in driver_writable]
        self._on_driver_write = on_driver_write
        self.generation = 0

    @property
    def size(self) -> int:
        return len(self._data)

    def _range(self, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > len(self._data):
            raise ConfigAccessError(f"config access [{offset}, +{size}) outside {self.size}")

    def read(self, offset: int, size: int) -> bytes:
        """Driver (transport) read of ``size`` bytes at ``offset``."""
        self._range(offset, size)
        return bytes(self._data[offset : offset + size])

    def snapshot(self) -> bytes:
        return bytes(self._data)

    def driver_write(self, offset: int, data: Buffer) -> bool:
        """Driver write: offered to ``on_driver_write`` first, then stored if inside a
        driver-writable range. Returns whether taken or applied (a write elsewhere is
        ignored, as devices do with read-only fields)."""
        raw = bytes(data)
        self._range(offset, len(raw))
        if self._on_driver_write is not None and self._on_driver_write(offset, raw):
            return True
        end = offset + len(raw)
        if not any(lo <= offset and end <= hi for lo, hi in self._writable):
            return False
        self._data[offset:end] = raw
        return True

    def update(self, offset: int, data: Buffer) -> bool:
        """Device-side change. Bumps the generation when the bytes change; returns
        whether they did (the caller then sends a configuration change notification)."""
        raw = bytes(data)
        self._range(offset, len(raw))
        if self._data[offset : offset + len(raw)] == raw:
            return False
        self._data[offset : offset + len(raw)] = raw
        self.generation = (self.generation + 1) & 0xFFFFFFFF
        return True


def read_consistent(generation: Callable[[], int], read: Callable[[], R], max_tries: int = 64) -> R:
    """Driver side of 2.5.1: ``do { before = gen; read; after = gen } while before !=
    after``, bounded by ``max_tries``."""
    for _ in range(max_tries):
        before = generation()
        value = read()
        if generation() == before:
            return value
    raise ConfigUnstableError(f"config generation unstable after {max_tries} reads")
