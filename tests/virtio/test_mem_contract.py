"""Every GuestMemory implementation against one reference model (a bytearray) and the
contract in `xenvirtio.mem.api`: never partial, negative/overflowing/unmapped ranges raise,
``view`` only when contiguous, ``views`` always, read-only refuses writes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.mem.grant_dma import XEN_PAGE_SIZE, GrantDmaMemory, grant_dma_addr
from xenvirtio.mem.guard import GuardedMemory

SIZE = 3 * XEN_PAGE_SIZE


def _two_regions() -> FlatMemory:
    mem = FlatMemory(XEN_PAGE_SIZE, base=0x10000)
    mem.add_region(0x10000 + XEN_PAGE_SIZE, bytearray(2 * XEN_PAGE_SIZE))
    return mem


def _grants() -> GrantDmaMemory:
    backing = bytearray(SIZE)
    pages = [memoryview(backing)[i * XEN_PAGE_SIZE : (i + 1) * XEN_PAGE_SIZE] for i in range(3)]
    return GrantDmaMemory(lambda gref: pages[gref - 100] if 100 <= gref < 103 else None)


# name -> (factory, base gpa, host-contiguous boundaries inside [base, base+SIZE))
IMPLS: dict[str, tuple[Callable[[], GuestMemory], int, list[int]]] = {
    "flat": (lambda: FlatMemory(SIZE, base=0x10000), 0x10000, []),
    "flat-2-regions": (_two_regions, 0x10000, [XEN_PAGE_SIZE]),
    "fragmented-1": (
        lambda: FragmentedMemory(SIZE, base=0x10000, fragment=1),
        0x10000,
        list(range(1, SIZE)),
    ),
    "fragmented-cuts": (
        lambda: FragmentedMemory(SIZE, base=0x10000, cuts=[7, 4096]),
        0x10000,
        [7, 4096],
    ),
    "grant-dma": (_grants, grant_dma_addr(100), [XEN_PAGE_SIZE, 2 * XEN_PAGE_SIZE]),
    "guarded": (
        lambda: GuardedMemory(FlatMemory(SIZE, base=0x10000), [(0x10000, SIZE)]),
        0x10000,
        [],
    ),
}

ranges = st.tuples(st.integers(-8, SIZE + 8), st.integers(-2, 600))


@pytest.mark.parametrize("name", sorted(IMPLS))
@settings(max_examples=60)
@given(ops=st.lists(st.tuples(ranges, st.binary(max_size=64)), min_size=1, max_size=12))
def test_matches_reference(name: str, ops: list[tuple[tuple[int, int], bytes]]) -> None:
    factory, base, cuts = IMPLS[name]
    mem = factory()
    model = bytearray(SIZE)
    for (off, size), data in ops:
        gpa = base + off
        # size 0 touches nothing: fine anywhere in [0, 2**64] (the contract).
        inside = (off >= 0 and size >= 0 and off + size <= SIZE) or size == 0
        if inside:
            assert mem.read(gpa, size) == bytes(model[off : off + size])
            pieces = mem.views(gpa, size)
            assert b"".join(bytes(p) for p in pieces) == bytes(model[off : off + size])
            assert all(len(p) for p in pieces)
            contiguous = not any(off < c < off + size for c in cuts)
            if contiguous:
                assert bytes(mem.view(gpa, size)) == bytes(model[off : off + size])
            else:
                with pytest.raises(GuestMemoryError):
                    mem.view(gpa, size)
            mem.check(gpa, size, write=True)
        else:
            for method in (mem.read, mem.views, mem.check):
                with pytest.raises(GuestMemoryError):
                    method(gpa, size)
        wgpa = gpa
        if (off >= 0 and off + len(data) <= SIZE) or not data:
            mem.write(wgpa, data)
            model[off : off + len(data)] = data
        else:
            before = mem.read(base, SIZE)
            with pytest.raises(GuestMemoryError):
                mem.write(wgpa, data)
            assert mem.read(base, SIZE) == before  # nothing written on failure
    assert mem.read(base, SIZE) == bytes(model)


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_hostile_ranges(name: str) -> None:
    factory, base, _ = IMPLS[name]
    mem = factory()
    for gpa, size in [
        (-1, 1),
        (base, -1),
        ((1 << 64) - 1, 2),
        (-1, 0),
        (base + SIZE, 1),
        (0, 1),
    ]:
        with pytest.raises(GuestMemoryError):
            mem.read(gpa, size)
        with pytest.raises(GuestMemoryError):
            mem.check(gpa, size)


def test_views_write_through() -> None:
    mem = FragmentedMemory(64, fragment=8)
    for view in mem.views(4, 20):
        view[:] = b"x" * len(view)
    assert mem.read(0, 32) == b"\0" * 4 + b"x" * 20 + b"\0" * 8


def test_read_only_region() -> None:
    mem = FlatMemory(16)
    mem.add_region(16, bytearray(b"r" * 16), readonly=True)
    assert mem.writable
    with pytest.raises(GuestMemoryError, match="read-only"):
        mem.write(8, b"0123456789")  # spans into the read-only region: nothing written
    assert mem.read(8, 8) == b"\0" * 8
    with pytest.raises(GuestMemoryError):
        mem.check(16, 1, write=True)
    assert mem.view(16, 4).readonly
    assert not FlatMemory(buffer=bytes(4)).writable  # type: ignore[arg-type]


def test_overlapping_regions_refused() -> None:
    mem = FlatMemory(16, base=16)
    with pytest.raises(ValueError):
        mem.add_region(8, bytearray(9))
    with pytest.raises(ValueError):
        mem.add_region(31, bytearray(1))
    mem.add_region(32, bytearray(1))


def test_shared_mmap_backing() -> None:
    import mmap

    mm = mmap.mmap(-1, 4096)
    mem = FlatMemory(buffer=mm, base=0x1000)
    mem.write(0x1010, b"shared")
    assert mm[0x10:0x16] == b"shared"
