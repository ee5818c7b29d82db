"""Little-endian register blocks that answer any access, including hostile ones.

A guest can issue a config-space or MMIO access of any size at any offset. A `Layout`
maps a block's fields by byte, so an access that matches one field exactly goes to that
field, and any other access (partial, unaligned, spanning fields or gaps) is served per
touched field: reads compose the bytes, writes merge the written bytes into the field's
current value. Bytes no field covers read 0 and ignore writes. Nothing raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_ACCESS = 8  # ioreqs carry at most 8 bytes of data (struct ioreq's u64 data)


def access_ok(size: int) -> bool:
    """Whether ``size`` is an access width we serve (1..8 bytes)."""
    return 1 <= size <= MAX_ACCESS


def size_mask(size: int) -> int:
    """All ones in ``size`` bytes (the value of a read nothing answers)."""
    return (1 << (8 * size)) - 1


@dataclass(frozen=True, slots=True)
class Field:
    """One register: ``size`` bytes at ``offset``."""

    name: str
    offset: int
    size: int


Getter = Callable[[Field], int]
Setter = Callable[[Field, int], None]


class Layout:
    """The fields of a ``length``-byte register block, indexed by byte."""

    __slots__ = ("_by_byte", "fields", "length")

    def __init__(self, fields: Sequence[Field], length: int) -> None:
        self.fields = {f.name: f for f in fields}
        self.length = length
        self._by_byte: list[Field | None] = [None] * length
        for f in fields:
            for i in range(f.offset, f.offset + f.size):
                if self._by_byte[i] is not None:
                    raise ValueError(f"field {f.name} overlaps {self._by_byte[i]}")
                self._by_byte[i] = f

    def touched(self, offset: int, size: int) -> list[Field]:
        """The fields an access overlaps, in address order (clipped to the block)."""
        out: list[Field] = []
        for i in range(max(offset, 0), min(offset + size, self.length)):
            f = self._by_byte[i]
            if f is not None and (not out or out[-1] is not f):
                out.append(f)
        return out

    def read(self, offset: int, size: int, get: Getter) -> int:
        """The ``size``-byte little-endian value at ``offset``; each field read once."""
        if not access_ok(size):
            return 0
        fields = self.touched(offset, size)
        if len(fields) == 1 and fields[0].offset == offset and fields[0].size == size:
            return get(fields[0]) & size_mask(size)
        value = 0
        for f in fields:
            raw = get(f) & size_mask(f.size)
            shift = f.offset - offset  # bytes; negative when the field starts earlier
            value |= raw << (8 * shift) if shift >= 0 else raw >> (-8 * shift)
        return value & size_mask(size)

    def write(self, offset: int, size: int, value: int, get: Getter, put: Setter) -> None:
        """Write ``value``; a field the access covers only partly keeps its other bytes."""
        if not access_ok(size):
            return
        value &= size_mask(size)
        for f in self.touched(offset, size):
            if f.offset == offset and f.size == size:
                put(f, value)
                continue
            lo = max(f.offset, offset)
            hi = min(f.offset + f.size, offset + size)
            part_mask = size_mask(hi - lo) << (8 * (lo - f.offset))
            part = (value >> (8 * (lo - offset))) & size_mask(hi - lo)
            merged = (get(f) & ~part_mask) | (part << (8 * (lo - f.offset)))
            put(f, merged & size_mask(f.size))


def read_natural(read: Callable[[int, int], int], addr: int, size: int) -> bytes:
    """Read ``size`` bytes with the widths virtio 1.2 4.1.3.1 / 4.2.2.2 ask for: 1 and 2 byte
    fields whole, anything 4-byte aligned in 32-bit pieces, the rest bytewise."""
    if size in (1, 2):
        return read(addr, size).to_bytes(size, "little")
    if size % 4 == 0 and addr % 4 == 0:
        return b"".join(read(addr + i, 4).to_bytes(4, "little") for i in range(0, size, 4))
    return bytes(read(addr + i, 1) for i in range(size))


def write_natural(write: Callable[[int, int, int], None], addr: int, data: bytes) -> None:
    """The write counterpart of `read_natural`."""
    size = len(data)
    if size in (1, 2):
        write(addr, size, int.from_bytes(data, "little"))
    elif size % 4 == 0 and addr % 4 == 0:
        for i in range(0, size, 4):
            write(addr + i, 4, int.from_bytes(data[i : i + 4], "little"))
    else:
        for i, byte in enumerate(data):
            write(addr + i, 1, byte)
