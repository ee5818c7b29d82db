"""blkif request encoding round-trips through parsing; every bad field is a BadRequest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.pvring.blkif.request import (
    REQUEST_CODEC,
    RESPONSE_CODEC,
    BadRequest,
    Limits,
    Segment,
    encode_discard,
    encode_indirect,
    encode_rw,
    encode_segments,
    parse,
    parse_indirect_segments,
)
from xenvirtio.pvring.ring import ring_size
from xenvirtio.spec import blkif as B

LIMITS = Limits(sectors=2048, max_indirect_segments=64)
segments = st.lists(
    st.builds(Segment, st.integers(0, 2**32 - 1), st.just(0), st.integers(0, 7)),
    min_size=1,
    max_size=11,
)


def test_ring_geometry_matches_linux() -> None:
    assert ring_size(REQUEST_CODEC, RESPONSE_CODEC, 0) == 32  # BLK_RING_SIZE, one page
    assert ring_size(REQUEST_CODEC, RESPONSE_CODEC, 4) == 512


@given(segs=segments, op=st.sampled_from([B.BLKIF_OP_READ, B.BLKIF_OP_WRITE]))
def test_rw_round_trip(segs: list[Segment], op: int) -> None:
    req = parse(encode_rw(op, 77, 16, segs), LIMITS)
    assert (req.id, req.operation, req.sector_number, list(req.segments)) == (77, op, 16, segs)


@given(raw=st.binary(min_size=B.REQUEST_SIZE, max_size=B.REQUEST_SIZE))
def test_any_bytes_parse_or_fail_typed(raw: bytes) -> None:
    try:
        req = parse(raw, LIMITS)
    except BadRequest as exc:
        assert exc.status in (B.BLKIF_RSP_ERROR, B.BLKIF_RSP_EOPNOTSUPP)
        return
    assert req.sector_number + req.length // 512 <= LIMITS.sectors or req.indirect_grefs
    assert len(req.segments) <= B.BLKIF_MAX_SEGMENTS_PER_REQUEST


@pytest.mark.parametrize(
    ("entry", "status"),
    [
        (encode_rw(B.BLKIF_OP_READ, 1, 0, [Segment(1, 3, 2)]), B.BLKIF_RSP_ERROR),
        (encode_rw(B.BLKIF_OP_READ, 1, 2047, [Segment(1, 0, 7)]), B.BLKIF_RSP_ERROR),
        (encode_rw(B.BLKIF_OP_READ, 1, 0, []), B.BLKIF_RSP_ERROR),
        (encode_rw(B.BLKIF_OP_WRITE_BARRIER, 1, 0, []), B.BLKIF_RSP_EOPNOTSUPP),
        (encode_discard(1, 2000, 100), B.BLKIF_RSP_ERROR),
        (encode_indirect(B.BLKIF_OP_READ, 1, 0, 65, [1]), B.BLKIF_RSP_ERROR),
        (encode_indirect(B.BLKIF_OP_DISCARD, 1, 0, 1, [1]), B.BLKIF_RSP_EOPNOTSUPP),
    ],
)
def test_bad_requests(entry: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as info:
        parse(entry, LIMITS)
    assert info.value.status == status and info.value.id == 1


def test_indirect_two_steps() -> None:
    segs = [Segment(100 + i, 0, 7) for i in range(40)]
    head = parse(encode_indirect(B.BLKIF_OP_WRITE, 9, 8, 40, [5]), LIMITS)
    assert head.indirect_grefs == (5,) and head.wire_operation == B.BLKIF_OP_INDIRECT
    full = parse_indirect_segments(head, encode_segments(segs).ljust(4096, b"\0"), LIMITS)
    assert list(full.segments) == segs and full.operation == B.BLKIF_OP_WRITE
    bad = encode_segments([*segs[:-1], Segment(1, 0, 9)])
    with pytest.raises(BadRequest):
        parse_indirect_segments(head, bad, LIMITS)
    no_indirect = Limits(sectors=2048)
    with pytest.raises(BadRequest) as info:
        parse(encode_indirect(B.BLKIF_OP_WRITE, 9, 8, 40, [5]), no_indirect)
    assert info.value.status == B.BLKIF_RSP_EOPNOTSUPP
