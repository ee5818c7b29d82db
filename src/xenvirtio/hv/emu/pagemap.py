"""Map chosen pages of a file contiguously into this process (``mmap`` + ``MAP_FIXED``).

Grant and foreign mappings hand out pages that sit anywhere in a domain's RAM file; the
caller wants them side by side, as gntdev and privcmd give them. We reserve an address
range, map each run of pages over it with ``MAP_FIXED`` and expose it as a memoryview.

Unmapping *revokes*: the range is replaced by private zero pages at once (the domain's
memory is no longer reachable through it) and the address range itself is returned when
the last view of it is gone, so a stale view reads zeros instead of crashing the process.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import weakref
from collections.abc import Sequence

PAGE_SIZE = mmap.PAGESIZE
_MAP_FIXED = 0x10
_MAP_NORESERVE = 0x4000
_PROT_NONE = 0

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _call_mmap(addr: int | None, length: int, prot: int, flags: int, fd: int, off: int) -> int:
    result = _mmap(addr, length, prot, flags, fd, off)
    if result is None or result == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return int(result)


def _runs(offsets: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first page index, file offset, page count) for each run of adjacent offsets."""
    runs: list[tuple[int, int, int]] = []
    for index, offset in enumerate(offsets):
        if runs and runs[-1][1] + runs[-1][2] * PAGE_SIZE == offset:
            first, start, count = runs[-1]
            runs[-1] = (first, start, count + 1)
        else:
            runs.append((index, offset, 1))
    return runs


class PageMap:
    """``len(offsets)`` pages of file ``fd`` mapped side by side (``MAP_SHARED``)."""

    def __init__(self, fd: int, offsets: Sequence[int], writable: bool) -> None:
        if not offsets:
            raise ValueError("nothing to map")
        self.size = len(offsets) * PAGE_SIZE
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        self.base = _call_mmap(None, self.size, _PROT_NONE, anon, -1, 0)
        try:
            for first, offset, count in _runs(offsets):
                addr = self.base + first * PAGE_SIZE
                _call_mmap(addr, count * PAGE_SIZE, prot, mmap.MAP_SHARED | _MAP_FIXED, fd, offset)
        except OSError:
            _munmap(self.base, self.size)
            raise
        array = (ctypes.c_ubyte * self.size).from_address(self.base)
        weakref.finalize(array, _munmap, self.base, self.size)
        self._array: ctypes.Array[ctypes.c_ubyte] | None = array
        self.memory = memoryview(array).cast("B")
        if not writable:
            self.memory = self.memory.toreadonly()

    def revoke(self) -> None:
        """Drop the shared pages now; the address range goes with the last view."""
        if self._array is None:
            return
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED | _MAP_NORESERVE
        _call_mmap(self.base, self.size, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
        self.memory.release()
        self._array = None
