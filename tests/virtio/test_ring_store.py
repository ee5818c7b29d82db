"""Ring fields the peer reads concurrently are published with one store: a reader in
another process (the device model, the guest) never sees a value that was not written,
in particular not the 0 ``struct.pack_into`` writes first."""

from __future__ import annotations

import mmap
import multiprocessing
import struct
import time
from collections.abc import Callable

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.virtio.rings import DEVICE, RingAreas, store_u16

U16 = struct.Struct("<H")
SECONDS = 0.3


def _count_zeros(shared: mmap.mmap, done: multiprocessing.synchronize.Event, out: object) -> None:
    zeros = 0
    view = memoryview(shared)
    while not done.is_set():
        for _ in range(1000):
            if U16.unpack_from(view, 2)[0] == 0:
                zeros += 1
    out.value = zeros  # type: ignore[attr-defined]
    view.release()


def _zeros_seen(make_writer: Callable[[memoryview], Callable[[int], None]]) -> int:
    """Values 1..0xffff written in a loop into a shared page while another process reads
    them; how many times the reader saw 0."""
    shared = mmap.mmap(-1, 4096)
    view = memoryview(shared)
    write = make_writer(view)
    write(1)
    ctx = multiprocessing.get_context("fork")
    done, zeros = ctx.Event(), ctx.Value("l", -1)
    reader = ctx.Process(target=_count_zeros, args=(shared, done, zeros))
    reader.start()
    try:
        deadline = time.monotonic() + SECONDS
        value = 1
        while time.monotonic() < deadline:
            for _ in range(1000):
                value = value % 0xFFFF + 1
                write(value)
    finally:
        done.set()
        reader.join(10)
    del write
    view.release()
    return int(zeros.value)


def test_store_u16_is_one_store() -> None:
    assert _zeros_seen(lambda view: lambda value: store_u16(view, 2, value)) == 0


def test_ring_areas_pack_is_one_store() -> None:
    def writer(view: memoryview) -> Callable[[int], None]:
        areas = RingAreas(FlatMemory(buffer=view), (0, 0, 0), (8, 8, 8), (True, True, True))
        assert areas.views is not None  # the zero-copy path
        return lambda value: areas.pack(DEVICE, 2, U16, value)

    assert _zeros_seen(writer) == 0


def test_store_u16_is_little_endian() -> None:
    buf = bytearray(4)
    store_u16(memoryview(buf), 2, 0x1234)
    assert buf == b"\0\0\x34\x12"
