"""What an NBD export is served from: the :class:`BlockBackend` port.

A file today; the guest-side virtio-blk (or blkif) driver later. The server calls these
methods concurrently (several requests of one connection, and several connections, at
once); a backend that cannot overlap operations serialises them itself.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Protocol


class BlockIOError(Exception):
    """A backend operation failed; ``errno`` says why (EIO, ENOSPC, EPERM...)."""

    def __init__(self, errno_value: int, message: str = "") -> None:
        super().__init__(errno_value, message or os.strerror(errno_value))
        self.errno = errno_value

    @classmethod
    def from_oserror(cls, exc: OSError) -> BlockIOError:
        return cls(exc.errno if exc.errno is not None else errno.EIO, str(exc))


class BlockBackend(Protocol):
    """A disk of ``size`` bytes. Offsets and lengths given to it are already checked: in
    bounds and aligned to ``block_size``. Failures raise :class:`BlockIOError`.

    ``block_size`` is the smallest unit the disk addresses (512 for a sector-based disk, 1
    for a file); it becomes the NBD minimum block size. ``read_only`` disks are never asked
    to write; ``can_trim`` / ``can_write_zeroes`` say whether trim and write_zeroes exist.
    """

    @property
    def size(self) -> int: ...

    @property
    def block_size(self) -> int: ...

    @property
    def read_only(self) -> bool: ...

    @property
    def can_trim(self) -> bool: ...

    @property
    def can_write_zeroes(self) -> bool: ...

    async def read(self, offset: int, length: int) -> bytes | bytearray | memoryview:
        """Exactly ``length`` bytes at ``offset``."""
        ...

    async def write(self, offset: int, data: bytes, fua: bool) -> None:
        """Write ``data``; with ``fua`` it is on stable storage when this returns."""
        ...

    async def flush(self) -> None:
        """Every write that completed before this call is on stable storage on return."""
        ...

    async def trim(self, offset: int, length: int) -> None:
        """The range is no longer needed (a hint: contents afterwards are unspecified)."""
        ...

    async def write_zeroes(self, offset: int, length: int, may_trim: bool) -> None:
        """The range reads back as zeroes; ``may_trim`` allows deallocating it to do so."""
        ...


ReadDone = Callable[[memoryview | BlockIOError, Callable[[], None]], None]
"""``done(data, release)``: the bytes read (valid until ``release()``), or the error
(then ``release`` does nothing). Called once, on the event loop's thread."""
WriteDone = Callable[[BlockIOError | None], None]


class DirectBackend(BlockBackend, Protocol):
    """A backend that also takes requests without a coroutine each: the server's fast
    path (no task, no future, no copy of read data). Both methods return at once and call
    ``done`` later on the loop's thread; ``submit_write`` has copied ``data`` (or no
    longer needs it) when it returns."""

    def submit_read(self, offset: int, length: int, done: ReadDone) -> None: ...

    def submit_write(self, offset: int, data: bytes, fua: bool, done: WriteDone) -> None: ...
