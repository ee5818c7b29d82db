"""`FragmentedMemory`: guest memory whose host mapping is cut into small fragments.

Like Linux's ``vringh_test`` handing out 1-byte ranges: a range that crosses a fragment
boundary is not contiguous in the host, so `view` raises and `views` returns one piece per
fragment. Code that handles this memory handles every scatter layout.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from xenvirtio.mem.api import Buffer, GuestMemoryError, check_range


class FragmentedMemory:
    """``size`` bytes at guest address ``base``, in fragments. Implements `GuestMemory`.

    ``fragment=1`` makes every byte its own fragment; ``cuts`` (offsets) gives explicit,
    irregular fragment boundaries instead.
    """

    def __init__(
        self,
        size: int,
        *,
        base: int = 0,
        fragment: int = 1,
        cuts: Sequence[int] | None = None,
    ) -> None:
        check_range(base, size)
        if fragment < 1:
            raise ValueError("fragment must be >= 1")
        self.base = base
        self.size = size
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        if cuts is None:
            self._cuts = list(range(fragment, size, fragment))
        else:
            self._cuts = sorted({c for c in cuts if 0 < c < size})

    @property
    def writable(self) -> bool:
        return True

    def _offset(self, gpa: int, size: int) -> int:
        check_range(gpa, size)
        off = gpa - self.base
        if size == 0:
            return max(0, min(off, self.size))
        if off < 0 or off + size > self.size:
            raise GuestMemoryError(gpa, size, "not mapped")
        return off

    def _bounds(self, off: int, size: int) -> list[tuple[int, int]]:
        """(start, end) offsets of the fragment pieces of ``[off, off+size)``."""
        out: list[tuple[int, int]] = []
        end = off + size
        i = bisect.bisect_right(self._cuts, off)
        pos = off
        while pos < end:
            stop = min(end, self._cuts[i]) if i < len(self._cuts) else end
            out.append((pos, stop))
            pos, i = stop, i + 1
        return out

    def check(self, gpa: int, size: int, write: bool = False) -> None:
        self._offset(gpa, size)

    def read(self, gpa: int, size: int) -> bytes:
        off = self._offset(gpa, size)
        return b"".join(bytes(self._mv[a:b]) for a, b in self._bounds(off, size))

    def write(self, gpa: int, data: Buffer) -> None:
        src = memoryview(data).cast("B")
        off = self._offset(gpa, len(src))
        for a, b in self._bounds(off, len(src)):
            self._mv[a:b] = src[a - off : b - off]

    def view(self, gpa: int, size: int) -> memoryview:
        off = self._offset(gpa, size)
        pieces = self._bounds(off, size)
        if len(pieces) > 1:
            raise GuestMemoryError(gpa, size, "not contiguous in the host")
        return self._mv[off : off + size]

    def views(self, gpa: int, size: int) -> list[memoryview]:
        off = self._offset(gpa, size)
        return [self._mv[a:b] for a, b in self._bounds(off, size)]
