"""How blkfront lays out each request on the ring (called again on a resubmission)."""

from __future__ import annotations

from collections.abc import Callable

from xenvirtio.drivers.blkif.pages import DataPage
from xenvirtio.pvring.blkif.request import (
    Segment,
    encode_discard,
    encode_indirect,
    encode_rw,
    encode_segments,
)
from xenvirtio.spec import blkif as B

Builder = Callable[[int, list[DataPage]], bytes]  # (id, data pages) -> ring entry


def segments_for(pages: list[DataPage], length: int) -> list[Segment]:
    """Whole pages from sector 0; the last one as far as ``length`` reaches."""
    segs = []
    for i, page in enumerate(pages):
        n = min(B.XEN_PAGE_SIZE, length - i * B.XEN_PAGE_SIZE)
        segs.append(Segment(page.gref, 0, n // B.SECTOR_SIZE - 1))
    return segs


def rw_builder(op: int, sector: int, length: int, indirect: list[DataPage]) -> Builder:
    def build(rid: int, pages: list[DataPage]) -> bytes:
        segs = segments_for(pages, length)
        if not indirect:
            return encode_rw(op, rid, sector, segs)
        table = encode_segments(segs)
        for i, page in enumerate(indirect):
            chunk = table[i * B.XEN_PAGE_SIZE : (i + 1) * B.XEN_PAGE_SIZE]
            page.view[: len(chunk)] = chunk
        return encode_indirect(op, rid, sector, len(segs), [p.gref for p in indirect])

    return build


def flush_builder(rid: int, pages: list[DataPage]) -> bytes:
    return encode_rw(B.BLKIF_OP_FLUSH_DISKCACHE, rid, 0, [])


def discard_builder(sector: int, nr_sectors: int) -> Builder:
    def build(rid: int, pages: list[DataPage]) -> bytes:
        return encode_discard(rid, sector, nr_sectors)

    return build
