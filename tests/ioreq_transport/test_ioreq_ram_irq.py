"""The guest RAM mapcache against a byte model (buckets, locking, invalidation,
refused frames), the MSI <-> pirq encoding Xen and Linux agree on, and INT#x to GSI
routing (the router over emu's pirqs: test_ioreq_pirq.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ioreq_fakes import FakeForeignMemory

from xenvirtio.mem.api import GuestMemoryError
from xenvirtio.transport.ioreq import (
    ForeignGuestRam,
    hvm_pci_intx_gsi,
    msi_pirq,
    pirq_msi_message,
)

PAGE = 4096
PAGES = 16
BUCKET = 2  # pages: many bucket boundaries in a small RAM


def make_ram() -> tuple[bytearray, FakeForeignMemory, ForeignGuestRam]:
    backing = bytearray(PAGES * PAGE)
    foreign = FakeForeignMemory(backing)
    return backing, foreign, ForeignGuestRam(foreign, 3, PAGES, bucket_pages=BUCKET)


ranges = st.tuples(st.integers(0, PAGES * PAGE + 64), st.integers(0, 3 * PAGE))


@given(st.lists(st.tuples(st.booleans(), ranges, st.binary(min_size=1, max_size=64))))
def test_mapcache_matches_a_byte_model(ops: list[tuple[bool, tuple[int, int], bytes]]) -> None:
    backing, _, ram = make_ram()
    model = bytearray(PAGES * PAGE)
    for write, (gpa, size), fill in ops:
        inside = gpa + size <= len(model)
        data = (fill * (size // len(fill) + 1))[:size]
        try:
            if write:
                ram.write(gpa, data)
                model[gpa : gpa + size] = data
            else:
                assert ram.read(gpa, size) == bytes(model[gpa : gpa + size])
            assert inside
        except GuestMemoryError:
            assert not inside
        if not size % 5:
            ram.invalidate()
    assert backing == model


def test_views_lock_their_buckets_across_invalidation() -> None:
    backing, foreign, ram = make_ram()
    ring = ram.view(BUCKET * PAGE + 16, 64)  # bucket 1
    ram.read(5 * BUCKET * PAGE, 8)  # bucket 5, read only
    assert ram.mapped_buckets == 2 and ram.invalidate() == 1
    ring[0:4] = b"ring"  # still the guest's memory
    assert backing[BUCKET * PAGE + 16 : BUCKET * PAGE + 20] == b"ring"
    assert foreign.unmapped == [tuple(range(5 * BUCKET, 6 * BUCKET))]
    with pytest.raises(GuestMemoryError):
        ram.view(BUCKET * PAGE - 8, 16)  # spans two buckets: not contiguous here
    assert [len(v) for v in ram.views(BUCKET * PAGE - 8, 16)] == [8, 8]
    ram.close()
    assert len(foreign.unmapped) == 3


def test_refused_frames_are_remembered_until_invalidation() -> None:
    _, foreign, ram = make_ram()
    foreign.refuse.add(7)
    for _ in range(3):
        with pytest.raises(GuestMemoryError):
            ram.read(7 * PAGE, 4)
    assert foreign.mapped == []  # asked once, refused, not asked again
    with pytest.raises(GuestMemoryError):
        ram.read(PAGES * PAGE - 2, 4)  # past the RAM: refused without asking
    foreign.refuse.clear()
    ram.invalidate()
    assert ram.read(7 * PAGE, 4) == bytes(4) and foreign.mapped == [(6, 7)]


@given(st.integers(1, (1 << 32) - 1))
def test_msi_carries_the_pirq(pirq: int) -> None:
    address, data = pirq_msi_message(pirq)
    assert msi_pirq(address, data) == pirq
    assert address & 0xFFF0_0FFF == 0xFEE0_0000 and data == 0x700  # vector 0, ExtINT


def test_msi_layout_is_linux_xen_msi_compose_msg() -> None:
    assert pirq_msi_message(0x1234) == (0x12 << 40 | 0xFEE0_0000 | 0x34 << 12, 0x700)
    assert msi_pirq(0xFEE0_0000, 0x41) is None  # a vector: an ordinary LAPIC MSI
    with pytest.raises(ValueError):
        pirq_msi_message(0)


def test_intx_gsi_is_xens_pci_link_routing() -> None:
    assert [hvm_pci_intx_gsi(4, pin) for pin in range(4)] == [32, 33, 34, 35]
    assert hvm_pci_intx_gsi(0, 0) == 16 and hvm_pci_intx_gsi(8, 0) == 17
    assert hvm_pci_intx_gsi(31, 3) == 18
