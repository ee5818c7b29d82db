"""Xen grant-DMA addresses (Linux grant-dma-ops encoding) and GrantDmaMemory."""

from __future__ import annotations

import pytest

from xenvirtio.mem.api import GuestMemoryError
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.grant_dma import (
    XEN_PAGE_SIZE,
    AddressKind,
    GrantDmaMemory,
    grant_dma_addr,
    translate,
)


def test_encoding_is_linux_grant_to_dma() -> None:
    # grant_to_dma(g) = (1 << 63) | (g << PAGE_SHIFT); offsets add within the page.
    assert grant_dma_addr(0) == 0x8000_0000_0000_0000
    assert grant_dma_addr(5, 0x10) == 0x8000_0000_0000_5010
    assert grant_dma_addr(0xFFFFFFFF) == (1 << 63) | 0xFFFFFFFF << 12
    assert translate(grant_dma_addr(77, 0xABC)) == (AddressKind.GRANT_DMA, 77, 0xABC)
    assert translate(0x1234_5678) == (AddressKind.GUEST_PHYSICAL, 0x12345, 0x678)
    with pytest.raises(ValueError):
        grant_dma_addr(1 << 32)


class Grants:
    """A toy grant table: gref -> page, some read-only; counts mappings."""

    def __init__(self) -> None:
        self.pages = {g: memoryview(bytearray(XEN_PAGE_SIZE)) for g in (10, 11, 12)}
        self.pages[13] = memoryview(bytes(XEN_PAGE_SIZE))  # granted read-only
        self.maps: list[int] = []

    def __call__(self, gref: int) -> memoryview | None:
        self.maps.append(gref)
        return self.pages.get(gref)


def test_consecutive_grants_form_one_buffer() -> None:
    grants = Grants()
    mem = GrantDmaMemory(grants)
    addr = grant_dma_addr(10, XEN_PAGE_SIZE - 3)
    mem.write(addr, b"abcdef")  # three bytes in gref 10, three in gref 11
    assert bytes(grants.pages[10][-3:]) == b"abc" and bytes(grants.pages[11][:3]) == b"def"
    assert [len(v) for v in mem.views(addr, 6)] == [3, 3]
    with pytest.raises(GuestMemoryError, match="separately mapped"):
        mem.view(addr, 6)
    assert mem.read(addr, 6) == b"abcdef"
    assert grants.maps == [10, 11]  # cached after the first mapping


def test_unmapped_and_read_only_grants() -> None:
    mem = GrantDmaMemory(Grants())
    with pytest.raises(GuestMemoryError, match="not mapped"):
        mem.read(grant_dma_addr(99), 1)
    with pytest.raises(GuestMemoryError, match="read-only"):
        mem.write(grant_dma_addr(13), b"x")
    with pytest.raises(GuestMemoryError):
        mem.write(grant_dma_addr(12, XEN_PAGE_SIZE - 1), b"xy")  # runs into gref 13
    assert mem.read(grant_dma_addr(12, XEN_PAGE_SIZE - 1), 1) == b"\0"  # nothing written
    assert mem.read(grant_dma_addr(13), 2) == b"\0\0"


def test_invalidate_remaps() -> None:
    grants = Grants()
    mem = GrantDmaMemory(grants)
    mem.read(grant_dma_addr(10), 1)
    mem.invalidate(10)
    mem.read(grant_dma_addr(10), 1)
    assert grants.maps == [10, 10]


def test_guest_physical_goes_to_the_foreign_mapping() -> None:
    foreign = FlatMemory(0x1000)
    mem = GrantDmaMemory(Grants(), foreign)
    mem.write(0x10, b"gpa")
    assert foreign.read(0x10, 3) == b"gpa"
    assert bytes(mem.view(0x10, 3)) == b"gpa"
    with pytest.raises(GuestMemoryError):
        GrantDmaMemory(Grants()).read(0x10, 1)  # no foreign mapping: unprivileged backend


def test_bad_resolver_page_size() -> None:
    mem = GrantDmaMemory(lambda gref: memoryview(bytearray(100)))
    with pytest.raises(GuestMemoryError, match="not one page"):
        mem.read(grant_dma_addr(1), 1)
