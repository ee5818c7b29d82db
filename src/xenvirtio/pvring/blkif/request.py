"""blkif requests: encode (frontend), parse and validate (backend). No I/O.

The backend parses the private copy `BackRing.copy_request` returned (never the shared
entry), then checks it against the disk and its limits before any grant is touched.
Everything wrong with a request is a `BadRequest` carrying the status to answer
(``BLKIF_RSP_ERROR`` or ``BLKIF_RSP_EOPNOTSUPP``): a bad request fails itself, not the
ring. Indirect requests are parsed in two steps: `parse` checks the header and the
indirect page count; `parse_indirect_segments` decodes the segments from a private copy
of the indirect pages.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from xenvirtio.pvring.ring import StructCodec
from xenvirtio.spec import blkif as B


@dataclass(frozen=True)
class Segment:
    """``struct blkif_request_segment``: sectors ``first_sect..last_sect`` of page ``gref``."""

    gref: int
    first_sect: int
    last_sect: int

    @property
    def offset(self) -> int:
        return self.first_sect * B.SECTOR_SIZE

    @property
    def length(self) -> int:
        return (self.last_sect - self.first_sect + 1) * B.SECTOR_SIZE


@dataclass(frozen=True)
class Response:
    """``struct blkif_response``."""

    id: int
    operation: int
    status: int


@dataclass(frozen=True)
class Request:
    """A decoded request. ``operation`` is the effective one (an indirect request's
    ``indirect_op``); ``indirect_grefs`` is non-empty for BLKIF_OP_INDIRECT, whose
    ``segments`` are filled in by `parse_indirect_segments`."""

    id: int
    operation: int
    sector_number: int
    segments: tuple[Segment, ...] = ()
    nr_segments: int = 0
    nr_sectors: int = 0  # discard
    indirect_grefs: tuple[int, ...] = ()
    wire_operation: int = -1  # the ring entry's operation byte, echoed in the response

    @property
    def length(self) -> int:
        return sum(s.length for s in self.segments)


@dataclass(frozen=True)
class Limits:
    """What the backend accepts: disk size in 512-byte sectors, features offered."""

    sectors: int
    max_indirect_segments: int = 0  # 0: no BLKIF_OP_INDIRECT
    flush: bool = True
    discard: bool = True
    read_only: bool = False
    barrier: bool = False  # feature-barrier: BLKIF_OP_WRITE_BARRIER accepted


class BadRequest(Exception):
    """A request to answer with ``status`` (its ``id`` and ``operation`` are echoed)."""

    def __init__(self, id: int, operation: int, status: int, reason: str) -> None:
        super().__init__(reason)
        self.id = id
        self.operation = operation
        self.status = status


# ------------------------------------------------------------------ ring codecs
def _raw(msg: bytes) -> tuple[bytes]:
    return (msg,)


REQUEST_CODEC: StructCodec[bytes] = StructCodec(
    struct.Struct(f"<{B.REQUEST_SIZE}s"), 8, _raw, lambda v: bytes(v[0])
)
RESPONSE_CODEC: StructCodec[Response] = StructCodec(
    B.RESPONSE, 8, lambda r: (r.id, r.operation, r.status), lambda v: Response(*v)
)


# ------------------------------------------------------------------ encoding (frontend)
def encode_rw(
    operation: int, id: int, sector: int, segments: list[Segment], handle: int = 0
) -> bytes:
    """A direct BLKIF_OP_READ/WRITE/FLUSH_DISKCACHE (at most 11 segments)."""
    if len(segments) > B.BLKIF_MAX_SEGMENTS_PER_REQUEST:
        raise ValueError("too many segments for a direct request")
    out = bytearray(B.REQUEST_SIZE)
    B.REQUEST_HEADER.pack_into(out, 0, operation, len(segments), handle, id, sector)
    for i, seg in enumerate(segments):
        B.SEGMENT.pack_into(out, B.REQUEST_HEADER.size + i * B.SEGMENT.size, *_seg(seg))
    return bytes(out)


def encode_indirect(
    operation: int, id: int, sector: int, nr_segments: int, grefs: list[int], handle: int = 0
) -> bytes:
    """BLKIF_OP_INDIRECT whose segments are in the pages ``grefs``."""
    padded = [*grefs, *[0] * (B.BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST - len(grefs))]
    head = B.INDIRECT.pack(B.BLKIF_OP_INDIRECT, operation, nr_segments, id, sector, handle, *padded)
    return head.ljust(B.REQUEST_SIZE, b"\0")


def encode_segments(segments: list[Segment]) -> bytes:
    """The contents of indirect pages for ``segments``."""
    return b"".join(B.SEGMENT.pack(*_seg(s)) for s in segments)


def encode_discard(id: int, sector: int, nr_sectors: int, secure: bool = False) -> bytes:
    flag = B.BLKIF_DISCARD_SECURE if secure else 0
    return B.DISCARD.pack(B.BLKIF_OP_DISCARD, flag, 0, id, sector, nr_sectors).ljust(
        B.REQUEST_SIZE, b"\0"
    )


def _seg(seg: Segment) -> tuple[int, int, int]:
    return (seg.gref, seg.first_sect, seg.last_sect)


# ------------------------------------------------------------------ parsing (backend)
def parse(raw: bytes, limits: Limits) -> Request:
    """Decode and check one ring entry (a private copy). Raises `BadRequest`."""
    op = raw[0]
    if op == B.BLKIF_OP_INDIRECT:
        return _parse_indirect(raw, limits)
    _, nseg, _, id, sector = B.REQUEST_HEADER.unpack_from(raw)
    if op == B.BLKIF_OP_DISCARD:
        return _parse_discard(raw, limits)
    if op == B.BLKIF_OP_FLUSH_DISKCACHE and limits.flush:
        if nseg > B.BLKIF_MAX_SEGMENTS_PER_REQUEST:
            raise BadRequest(id, op, B.BLKIF_RSP_ERROR, f"flush with {nseg} segments")
        return Request(id, op, sector, wire_operation=op)
    barrier = op == B.BLKIF_OP_WRITE_BARRIER and limits.barrier
    if op not in (B.BLKIF_OP_READ, B.BLKIF_OP_WRITE) and not barrier:
        raise BadRequest(id, op, B.BLKIF_RSP_EOPNOTSUPP, f"operation {op} not supported")
    least = 0 if barrier else 1  # an empty barrier is a drain + flush (Linux blkback)
    if not least <= nseg <= B.BLKIF_MAX_SEGMENTS_PER_REQUEST:
        raise BadRequest(id, op, B.BLKIF_RSP_ERROR, f"{nseg} segments")
    segs = tuple(
        Segment(*B.SEGMENT.unpack_from(raw, B.REQUEST_HEADER.size + i * B.SEGMENT.size))
        for i in range(nseg)
    )
    req = Request(id, op, sector, segs, nseg, wire_operation=op)
    check_rw(req, limits)
    return req


def _parse_discard(raw: bytes, limits: Limits) -> Request:
    op, _flag, _, id, sector, nr = B.DISCARD.unpack_from(raw)
    if not limits.discard or limits.read_only:
        raise BadRequest(id, op, B.BLKIF_RSP_EOPNOTSUPP, "discard not offered")
    if sector + nr > limits.sectors:
        raise BadRequest(id, op, B.BLKIF_RSP_ERROR, "discard beyond the disk")
    return Request(id, op, sector, nr_sectors=nr, wire_operation=op)


def _parse_indirect(raw: bytes, limits: Limits) -> Request:
    fields = B.INDIRECT.unpack_from(raw)
    op, iop, nseg, id, sector = fields[0], fields[1], fields[2], fields[3], fields[4]
    if limits.max_indirect_segments == 0:
        raise BadRequest(id, op, B.BLKIF_RSP_EOPNOTSUPP, "indirect requests not offered")
    if iop not in (B.BLKIF_OP_READ, B.BLKIF_OP_WRITE):
        raise BadRequest(id, op, B.BLKIF_RSP_EOPNOTSUPP, f"indirect operation {iop}")
    if not 1 <= nseg <= limits.max_indirect_segments:
        raise BadRequest(id, op, B.BLKIF_RSP_ERROR, f"{nseg} indirect segments")
    pages = -(-nseg // B.SEGMENTS_PER_INDIRECT_FRAME)
    return Request(id, iop, sector, (), nseg, indirect_grefs=fields[6 : 6 + pages],
                   wire_operation=op)  # fmt: skip


def parse_indirect_segments(req: Request, pages: bytes, limits: Limits) -> Request:
    """Fill in an indirect request's segments from a private copy of its pages."""
    if len(pages) < req.nr_segments * B.SEGMENT.size:
        raise BadRequest(req.id, req.wire_operation, B.BLKIF_RSP_ERROR, "short indirect pages")
    segs = tuple(Segment(*B.SEGMENT.unpack_from(pages, i * B.SEGMENT.size))
                 for i in range(req.nr_segments))  # fmt: skip
    full = dataclasses.replace(req, segments=segs)
    check_rw(full, limits)
    return full


def check_rw(req: Request, limits: Limits) -> None:
    """Segment sector bounds and capacity (Linux blkback's ``xen_blkbk_map``/``dispatch_rw``
    checks): ``first_sect <= last_sect < 8`` and the whole range on the disk."""
    for seg in req.segments:
        if seg.last_sect >= B.SECTORS_PER_PAGE or seg.first_sect > seg.last_sect:
            raise BadRequest(
                req.id, req.wire_operation, B.BLKIF_RSP_ERROR,
                f"segment sectors {seg.first_sect}..{seg.last_sect}",
            )  # fmt: skip
    if req.operation in (B.BLKIF_OP_WRITE, B.BLKIF_OP_WRITE_BARRIER) and limits.read_only:
        raise BadRequest(req.id, req.wire_operation, B.BLKIF_RSP_ERROR, "read-only disk")
    if req.sector_number + req.length // B.SECTOR_SIZE > limits.sectors:
        raise BadRequest(req.id, req.wire_operation, B.BLKIF_RSP_ERROR, "beyond the disk")
