"""Reader/Writer streams over a chain's segments, on contiguous and fragmented memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.virtio.queue import ChainExhaustedError, DescriptorAddressError, DescriptorChain


def chain_of(segments: list[tuple[int, int]], writable: bool) -> DescriptorChain:
    total = sum(n for _, n in segments)
    if writable:
        return DescriptorChain(0, (), tuple(segments), 0, total, len(segments))
    return DescriptorChain(0, tuple(segments), (), total, 0, len(segments))


def memories() -> list[GuestMemory]:
    return [
        FlatMemory(0x1000),
        FragmentedMemory(0x1000, fragment=1),
        FragmentedMemory(0x1000, cuts=[5, 77, 300]),
    ]


@pytest.mark.parametrize("mem", memories(), ids=["flat", "bytes", "cuts"])
def test_reader_spans_segments(mem: GuestMemory) -> None:
    mem.write(0x100, b"hello ")
    mem.write(0x200, b"world")
    reader = chain_of([(0x100, 6), (0x200, 5)], False).reader(mem)
    assert reader.remaining == 11
    assert reader.read(3) == b"hel"
    assert reader.read(5) == b"lo wo"
    buf = bytearray(3)
    assert reader.read_into(buf) == 3 and buf == b"rld"
    assert reader.remaining == 0 and reader.bytes_read == 11
    assert reader.read() == b""


@pytest.mark.parametrize("mem", memories(), ids=["flat", "bytes", "cuts"])
def test_writer_spans_segments(mem: GuestMemory) -> None:
    writer = chain_of([(0x100, 4), (0x300, 4)], True).writer(mem)
    assert writer.write(b"abcdef") == 6
    assert writer.bytes_written == 6 and writer.remaining == 2
    assert mem.read(0x100, 4) == b"abcd" and mem.read(0x300, 2) == b"ef"
    with pytest.raises(ChainExhaustedError):
        writer.write(b"xyz")
    assert writer.remaining == 2  # nothing consumed by the failed write
    assert mem.read(0x302, 2) == b"\0\0"


def test_exhausted_read_consumes_nothing() -> None:
    mem = FlatMemory(0x1000)
    reader = chain_of([(0, 4)], False).reader(mem)
    with pytest.raises(ChainExhaustedError):
        reader.read(5)
    assert reader.remaining == 4
    reader.skip(4)
    with pytest.raises(ChainExhaustedError):
        reader.skip(1)


def test_views_are_zero_copy() -> None:
    mem = FragmentedMemory(0x1000, cuts=[0x102])
    writer = chain_of([(0x100, 4), (0x200, 4)], True).writer(mem)
    views = writer.views(6)
    assert [len(v) for v in views] == [2, 2, 2]  # cut at 0x102, then the second segment
    for view in views:
        view[:] = b"Z" * len(view)
    assert mem.read(0x100, 4) == b"ZZZZ" and mem.read(0x200, 4) == b"ZZ\0\0"
    assert writer.remaining == 2
    reader = chain_of([(0x100, 4)], False).reader(mem)
    assert b"".join(bytes(v) for v in reader.views()) == b"ZZZZ"


def test_fault_in_a_later_segment_writes_nothing() -> None:
    mem = FlatMemory(0x1000)
    writer = chain_of([(0x100, 4), (0x2000, 4)], True).writer(mem)
    with pytest.raises(DescriptorAddressError):
        writer.write(b"12345678")
    assert mem.read(0x100, 4) == b"\0\0\0\0"
    reader = chain_of([(0x100, 4), (0x2000, 4)], False).reader(mem)
    with pytest.raises(DescriptorAddressError):
        reader.read()


def test_read_into_views() -> None:
    mem = FlatMemory(0x1000)
    mem.write(0, b"abcdefgh")
    reader = chain_of([(0, 8)], False).reader(mem)
    a, b = bytearray(3), bytearray(5)
    assert reader.read_into_views([memoryview(a), memoryview(b)]) == 8
    assert (a, b) == (b"abc", b"defgh")


@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    reads=st.lists(st.integers(0, 50), max_size=10),
)
def test_reads_concatenate_to_the_segments(lengths: list[int], reads: list[int]) -> None:
    mem = FragmentedMemory(0x1000, fragment=3)
    segments, at = [], 0
    for n in lengths:
        segments.append((at, n))
        at += n + 5
    for i in range(at):
        mem.write(i, bytes([i & 0xFF]))
    expected = b"".join(mem.read(a, n) for a, n in segments)
    reader = chain_of(segments, False).reader(mem)
    got = b""
    for n in reads:
        if n > reader.remaining:
            with pytest.raises(ChainExhaustedError):
                reader.read(n)
        else:
            got += reader.read(n)
    got += reader.read()
    assert got == expected
