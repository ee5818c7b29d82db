"""Byte streams over a descriptor chain's segments, so device code never indexes raw
descriptors (compare rust-vmm's descriptor_utils Reader/Writer).

A `Reader` walks the device-readable segments, a `Writer` the device-writable ones. Both
are positioned streams: each call consumes bytes. Going past the end raises
`ChainExhaustedError` before anything is consumed; guest memory faults raise
`DescriptorAddressError` (both `VirtqueueError`). ``views(n)`` hands out zero-copy
pieces for ``os.preadv``/``os.pwritev``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from xenvirtio.mem.api import Buffer, GuestMemory, GuestMemoryError
from xenvirtio.virtio.queue import ChainExhaustedError, DescriptorAddressError

Segments = tuple[tuple[int, int], ...]


class _Stream:
    """Shared position bookkeeping over ``(addr, len)`` segments."""

    __slots__ = ("_consumed", "_index", "_mem", "_offset", "_segments", "_total")

    def __init__(self, mem: GuestMemory, segments: Segments) -> None:
        self._mem = mem
        self._segments = segments
        self._index = 0  # current segment
        self._offset = 0  # bytes consumed within it
        self._consumed = 0
        self._total = sum(length for _, length in segments)

    @property
    def remaining(self) -> int:
        """Bytes left in the stream."""
        return self._total - self._consumed

    def _need(self, n: int) -> None:
        if n < 0:
            raise ValueError("negative length")
        if n > self._total - self._consumed:
            raise ChainExhaustedError(
                f"chain has {self._total - self._consumed} bytes left, {n} needed"
            )

    def _ranges(self, n: int) -> Iterator[tuple[int, int]]:
        """Consume ``n`` bytes (already checked), yielding guest ``(addr, len)`` pieces."""
        segments = self._segments
        while n:
            addr, length = segments[self._index]
            chunk = min(length - self._offset, n)
            if chunk:
                yield addr + self._offset, chunk
            self._offset += chunk
            self._consumed += chunk
            n -= chunk
            if self._offset == length:
                self._index += 1
                self._offset = 0

    def _views(self, n: int, write: bool) -> list[memoryview]:
        self._need(n)
        out: list[memoryview] = []
        ranges = list(self._peek(n))
        try:
            for addr, chunk in ranges:
                if write:
                    self._mem.check(addr, chunk, write=True)
                out.extend(self._mem.views(addr, chunk))
        except GuestMemoryError as err:
            raise DescriptorAddressError(str(err), err) from err
        for _ in self._ranges(n):
            pass
        return out

    def _peek(self, n: int) -> Iterator[tuple[int, int]]:
        """Like `_ranges` without consuming."""
        saved = (self._index, self._offset, self._consumed)
        try:
            yield from self._ranges(n)
        finally:
            self._index, self._offset, self._consumed = saved

    def skip(self, n: int) -> None:
        """Consume ``n`` bytes without touching memory."""
        self._need(n)
        for _ in self._ranges(n):
            pass


class Reader(_Stream):
    """Reads the device-readable part of a chain in order."""

    __slots__ = ()

    @property
    def bytes_read(self) -> int:
        return self._consumed

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes (all remaining if ``n < 0``); raises if fewer are left."""
        if n < 0:
            n = self.remaining
        self._need(n)
        ranges = list(self._peek(n))
        if len(ranges) == 1:
            data = self._read_one(*ranges[0])
        else:
            data = b"".join(self._read_one(addr, chunk) for addr, chunk in ranges)
        self.skip(n)
        return data

    def _read_one(self, addr: int, size: int) -> bytes:
        try:
            return self._mem.read(addr, size)
        except GuestMemoryError as err:
            raise DescriptorAddressError(str(err), err) from err

    def read_into(self, buf: Buffer) -> int:
        """Fill all of ``buf`` (a writable buffer) from the chain; returns its length."""
        target = memoryview(buf).cast("B")
        data = self.read(len(target))
        target[:] = data
        return len(target)

    def read_into_views(self, targets: Iterable[memoryview]) -> int:
        """Fill each writable view in turn; returns the bytes copied."""
        total = 0
        for target in targets:
            total += self.read_into(target)
        return total

    def views(self, n: int = -1) -> list[memoryview]:
        """Zero-copy views of the next ``n`` bytes (all if ``n < 0``), e.g. for pwritev.

        The guest can change these bytes at any time: use them only as opaque data."""
        return self._views(self.remaining if n < 0 else n, write=False)


class Writer(_Stream):
    """Writes the device-writable part of a chain in order."""

    __slots__ = ()

    @property
    def bytes_written(self) -> int:
        return self._consumed

    def write(self, data: Buffer) -> int:
        """Write all of ``data``; raises (writing nothing) if it does not fit."""
        src = memoryview(data).cast("B")
        n = len(src)
        self._need(n)
        ranges = list(self._peek(n))
        try:
            for addr, chunk in ranges:  # validate all first: no partial writes on a fault
                self._mem.check(addr, chunk, write=True)
            pos = 0
            for addr, chunk in ranges:
                self._mem.write(addr, src[pos : pos + chunk])
                pos += chunk
        except GuestMemoryError as err:
            raise DescriptorAddressError(str(err), err) from err
        self.skip(n)
        return n

    def write_from_views(self, sources: Iterable[Buffer]) -> int:
        """Write each buffer in turn; returns the bytes written."""
        return sum(self.write(src) for src in sources)

    def views(self, n: int = -1) -> list[memoryview]:
        """Zero-copy writable views of the next ``n`` bytes (all if ``n < 0``), e.g. for
        preadv; counts them as written."""
        return self._views(self.remaining if n < 0 else n, write=True)
