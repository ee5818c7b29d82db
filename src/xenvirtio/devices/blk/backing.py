"""The disk behind a virtio-blk device: a raw image file or a block device.

Blocking syscalls only (``preadv``/``pwritev`` straight into guest-memory views,
``fdatasync``, ``fallocate``); engines decide which thread runs them. Every method may
raise OSError, which the engine turns into VIRTIO_BLK_S_IOERR.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

# linux/falloc.h
FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
FALLOC_FL_ZERO_RANGE: Final = 0x10

IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_ZERO_CHUNK: Final = 1 << 20
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@functools.cache
def _libc_fallocate() -> Callable[[int, int, int, int], int]:
    """libc's fallocate(2): ``os`` has only posix_fallocate, without a mode."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    func = libc.fallocate
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc_fallocate()(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _advance(views: list[memoryview], n: int) -> list[memoryview]:
    """Drop the first ``n`` bytes of ``views`` (after a short transfer)."""
    out = views
    while n and out:
        if n >= len(out[0]):
            n -= len(out[0])
            out = out[1:]
        else:
            out = [out[0][n:], *out[1:]]
            n = 0
    return out


class BlockFile:
    """An open disk image. ``size`` is fixed at open time (the file is never extended);
    the device exposes ``size // 512`` sectors."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        self.fd = os.open(self.path, flags)
        try:
            mode = os.fstat(self.fd).st_mode
            self.is_block_device = stat.S_ISBLK(mode)
            if not (self.is_block_device or stat.S_ISREG(mode)):
                raise OSError(errno.EINVAL, f"{path} is neither a file nor a block device")
            self.size = os.lseek(self.fd, 0, os.SEEK_END)  # works for both kinds
        except BaseException:
            os.close(self.fd)
            raise
        self._punch_ok = True
        self._zero_range_ok = True
        self._nowait_ok = hasattr(os, "RWF_NOWAIT")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> BlockFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def preadv(self, views: Sequence[memoryview], offset: int) -> None:
        """Fill ``views`` from ``offset``; a short read (EOF) is EIO."""
        pending = list(views)
        while pending:
            got = os.preadv(self.fd, pending[:IOV_MAX], offset)
            if got == 0:
                raise OSError(errno.EIO, f"short read at {offset:#x}")
            offset += got
            pending = _advance(pending, got)

    def preadv_nowait(self, views: Sequence[memoryview], offset: int) -> bool:
        """Fill ``views`` only if that needs no waiting (page cache hits, preadv2(2)
        RWF_NOWAIT); False when it would block or the file cannot say (then nothing
        useful was read and the caller reads the blocking way)."""
        if not self._nowait_ok or len(views) > IOV_MAX:
            return False
        want = sum(len(v) for v in views)
        try:
            return os.preadv(self.fd, views, offset, os.RWF_NOWAIT) == want
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self._nowait_ok = False
            return False

    def pwritev(self, views: Sequence[memoryview], offset: int) -> None:
        pending = list(views)
        while pending:
            done = os.pwritev(self.fd, pending[:IOV_MAX], offset)
            if done == 0:
                raise OSError(errno.EIO, f"short write at {offset:#x}")
            offset += done
            pending = _advance(pending, done)

    def datasync(self) -> None:
        """fdatasync: completed writes (and the metadata to read them) are stable."""
        os.fdatasync(self.fd)

    def punch(self, offset: int, length: int) -> bool:
        """Deallocate the range (it reads back as zeroes); False where the file system
        cannot (a discard is only a hint then)."""
        if not self._punch_ok or not length:
            return False
        try:
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self._punch_ok = False
            return False
        return True

    def write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        """The range reads back as zeroes: a hole if ``unmap`` allows one, else
        FALLOC_FL_ZERO_RANGE, else written zeroes."""
        if not length or (unmap and self.punch(offset, length)):
            return
        if self._zero_range_ok:
            try:
                fallocate(self.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)
                return
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self._zero_range_ok = False
        zeroes = memoryview(bytes(min(length, _ZERO_CHUNK)))
        for start in range(offset, offset + length, _ZERO_CHUNK):
            self.pwritev([zeroes[: min(_ZERO_CHUNK, offset + length - start)]], start)
