"""A raw image file as a :class:`~xenvirtio.nbd.backend.BlockBackend`.

Blocking syscalls (pread/pwrite, fdatasync, fallocate) run in a small thread pool of the
backend's own, so the event loop keeps serving other requests and connections meanwhile.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from xenvirtio.nbd.backend import BlockIOError

# linux/falloc.h
FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
FALLOC_FL_ZERO_RANGE: Final = 0x10

_ZERO_CHUNK: Final = 1 << 20  # fallback write_zeroes writes this much at a time
_NOWAIT_MAX: Final = 256 << 10  # larger reads go to the pool: copying them would stall the loop
_T = TypeVar("_T")


@functools.cache
def _libc_fallocate() -> Callable[[int, int, int, int], int]:
    """libc's fallocate(2), which os does not expose with a mode argument."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fallocate = libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    return fallocate


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2); raises OSError (EOPNOTSUPP where the file system lacks ``mode``)."""
    if _libc_fallocate()(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class FileBackend:
    """A raw image: byte ``n`` of the export is byte ``n`` of the file. Its size is fixed at
    open time; the file is never extended. A file is byte-addressable, so ``block_size``
    defaults to 1; 512 makes the export behave like a sector-based disk.

    FUA and flush use fdatasync (data and the metadata needed to read it back). Trim punches
    a hole (a no-op where the file system cannot); write_zeroes punches a hole when allowed,
    else uses FALLOC_FL_ZERO_RANGE, else writes zeroes.
    """

    def __init__(
        self, path: str | Path, *, read_only: bool = False, block_size: int = 1, workers: int = 4
    ) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
        self.size = os.fstat(self._fd).st_size
        self.block_size = block_size
        self.read_only = read_only
        self.can_trim = not read_only
        self.can_write_zeroes = not read_only
        self._nowait_ok = True
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbd-file")

    def close(self) -> None:
        """Wait for running operations, then close the file."""
        self._pool.shutdown(wait=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _run(self, func: Callable[..., _T], *args: object) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)
        except OSError as exc:
            raise BlockIOError.from_oserror(exc) from exc

    async def read(self, offset: int, length: int) -> bytes | bytearray | memoryview:
        buf = bytearray(length)
        done = self._read_nowait(buf, offset)
        if done < length:
            await self._run(self._pread_into, buf, offset, done)
        return buf

    async def write(self, offset: int, data: bytes, fua: bool) -> None:
        # Buffered writes with RWF_NOWAIT measured slower than the pool: always the pool.
        await self._run(self._pwrite_all, offset, data, fua)

    def _read_nowait(self, buf: bytearray, offset: int) -> int:
        """Try the read on the event loop with RWF_NOWAIT, which reads only what needs no
        waiting (a page cache hit; preadv2(2)). Saves the hop to the pool; returns how many
        bytes were read, 0 when the kernel would have blocked."""
        if not self._nowait_ok or len(buf) > _NOWAIT_MAX:
            return 0
        try:
            return os.preadv(self._fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self._nowait_ok = False  # this file system cannot: always use the pool
                return 0
            raise BlockIOError.from_oserror(exc) from exc

    async def flush(self) -> None:
        await self._run(os.fdatasync, self._fd)

    async def trim(self, offset: int, length: int) -> None:
        await self._run(self._punch, offset, length)

    async def write_zeroes(self, offset: int, length: int, may_trim: bool) -> None:
        await self._run(self._zero, offset, length, may_trim)

    # --- run in the pool ---

    def _pread_into(self, buf: bytearray, offset: int, done: int) -> None:
        view = memoryview(buf)
        while done < len(buf):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got == 0:  # the file shrank under us
                raise OSError(errno.EIO, f"short read at {offset + done:#x}")
            done += got

    def _pwrite_all(self, offset: int, data: bytes, fua: bool) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwritev(self._fd, [view[done:]], offset + done)
        if fua:
            os.fdatasync(self._fd)

    def _punch(self, offset: int, length: int) -> bool:
        """Punch a hole; False if the file system cannot (trim is only a hint, then)."""
        try:
            fallocate(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
                return False
            raise
        return True

    def _zero(self, offset: int, length: int, may_trim: bool) -> None:
        if may_trim and self._punch(offset, length):
            return
        try:
            fallocate(self._fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        zeroes = bytes(min(length, _ZERO_CHUNK))
        for start in range(offset, offset + length, _ZERO_CHUNK):
            self._pwrite_all(start, zeroes[: min(_ZERO_CHUNK, offset + length - start)], False)
