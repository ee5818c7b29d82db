"""Request.parse: every malformed request gets its status (or the typed protocol error),
and a valid one names exactly the bytes the engine may touch (virtio 1.2 5.2.6)."""

from __future__ import annotations

import pytest
from blk_support import ChainMaker, header, segment
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.devices.blk.request import (
    MissingStatusError,
    ParseError,
    Request,
    RequestLimits,
    slice_segments,
)
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.guard import GuardedMemory
from xenvirtio.spec import virtio_blk as B

T = B.VirtioBlkType
OK, IOERR, UNSUPP = (int(s) for s in B.VirtioBlkStatus)
CAP = 2048  # sectors: a 1 MiB disk
LIMITS = RequestLimits(
    capacity=CAP,
    discard=True,
    write_zeroes=True,
    max_discard_sectors=256,
    max_discard_seg=4,
    max_write_zeroes_sectors=512,
    max_write_zeroes_seg=2,
)


def parse(readable: list[bytes], writable: list[int], limits: RequestLimits = LIMITS):
    mem = FlatMemory(4 << 20)
    chain = ChainMaker(mem).chain(readable, writable)
    return chain, Request.parse(chain, mem, limits)


def status_of(result: Request | ParseError) -> int:
    return result.status if isinstance(result, ParseError) else OK


# ------------------------------------------------------------------------- valid requests
def test_read_names_the_writable_data_and_the_status_byte() -> None:
    chain, req = parse([header(T.VIRTIO_BLK_T_IN, 8)], [4096, 1])
    assert isinstance(req, Request)
    assert (req.type, req.offset, req.data_len) == (T.VIRTIO_BLK_T_IN, 8 * 512, 4096)
    assert req.data == (chain.writable[0],)
    assert req.status_addr == chain.writable[1][0]


def test_status_byte_may_share_the_last_data_descriptor() -> None:
    chain, req = parse([header(T.VIRTIO_BLK_T_IN, 0)], [512, 1025])
    assert isinstance(req, Request)
    (a0, _), (a1, _) = chain.writable
    assert req.data == ((a0, 512), (a1, 1024))
    assert req.status_addr == a1 + 1024


def test_header_split_over_descriptors_and_write_data_after_it() -> None:
    raw = header(T.VIRTIO_BLK_T_OUT, 4) + b"x" * 1024
    chain, req = parse([raw[:5], raw[5:700], raw[700:]], [1])
    assert isinstance(req, Request) and req.type == T.VIRTIO_BLK_T_OUT
    assert req.offset == 2048 and req.data_len == 1024
    _, (a1, _), (a2, n2) = chain.readable
    assert req.data == ((a1 + 11, 684), (a2, n2))


def test_flush_get_id_discard_and_write_zeroes() -> None:
    _, flush = parse([header(T.VIRTIO_BLK_T_FLUSH)], [1])
    assert isinstance(flush, Request) and flush.type == T.VIRTIO_BLK_T_FLUSH
    _, ident = parse([header(T.VIRTIO_BLK_T_GET_ID)], [20, 1])
    assert isinstance(ident, Request) and ident.data_len == 20
    _, disc = parse([header(T.VIRTIO_BLK_T_DISCARD) + segment(8, 16) + segment(64, 8)], [1])
    assert isinstance(disc, Request)
    assert [(r.offset, r.length, r.unmap) for r in disc.ranges] == [
        (4096, 8192, False),
        (32768, 4096, False),
    ]
    _, wz = parse([header(T.VIRTIO_BLK_T_WRITE_ZEROES), segment(0, 512, 1)], [1])
    assert isinstance(wz, Request) and wz.ranges[0].unmap and wz.ranges[0].length == 512 * 512


def test_last_sectors_and_empty_transfers_are_in_range() -> None:
    assert status_of(parse([header(T.VIRTIO_BLK_T_IN, CAP - 1)], [512, 1])[1]) == OK
    assert status_of(parse([header(T.VIRTIO_BLK_T_IN, CAP)], [1])[1]) == OK


def test_writethrough_marks_writes_fua() -> None:
    limits = RequestLimits(capacity=CAP, flush=False, writethrough=True)
    _, req = parse([header(T.VIRTIO_BLK_T_OUT, 0), b"y" * 512], [1], limits)
    assert isinstance(req, Request) and req.fua
    _, flush = parse([header(T.VIRTIO_BLK_T_FLUSH)], [1], limits)
    assert status_of(flush) == UNSUPP  # FLUSH not negotiated


# ------------------------------------------------------------------------- malformed
def test_no_status_byte_is_a_protocol_error() -> None:
    with pytest.raises(MissingStatusError):
        parse([header(T.VIRTIO_BLK_T_OUT), b"z" * 512], [])
    with pytest.raises(MissingStatusError):
        parse([header(T.VIRTIO_BLK_T_IN)], [512, 0])


@pytest.mark.parametrize("length", [0, 1, 8, 15])
def test_short_header_is_ioerr(length: int) -> None:
    _, res = parse([header(T.VIRTIO_BLK_T_IN)[:length]] if length else [], [512, 1])
    assert isinstance(res, ParseError) and res.status == IOERR


@pytest.mark.parametrize("rtype", [2, 3, 5, 10, 14, 15, 16, 26, 0x8000_0000, 0xFFFF_FFFF])
def test_unknown_types_are_unsupp(rtype: int) -> None:
    assert status_of(parse([header(rtype)], [512, 1])[1]) == UNSUPP


@pytest.mark.parametrize(
    ("sector", "nbytes"),
    [(CAP, 512), (CAP - 1, 1024), (CAP + 1, 0), (2**64 - 1, 512), (2**63, 512), (1, CAP * 512)],
)
def test_out_of_range_reads_and_writes_are_ioerr(sector: int, nbytes: int) -> None:
    assert status_of(parse([header(T.VIRTIO_BLK_T_IN, sector)], [nbytes, 1])[1]) == IOERR
    raw = [header(T.VIRTIO_BLK_T_OUT, sector), bytes(nbytes)] if nbytes else [header(1, sector)]
    assert status_of(parse(raw, [1])[1]) == IOERR


@pytest.mark.parametrize("nbytes", [1, 511, 513, 4095])
def test_partial_sectors_are_ioerr(nbytes: int) -> None:
    assert status_of(parse([header(T.VIRTIO_BLK_T_IN)], [nbytes, 1])[1]) == IOERR
    assert status_of(parse([header(T.VIRTIO_BLK_T_OUT), bytes(nbytes)], [1])[1]) == IOERR


def test_data_on_the_wrong_side_is_ioerr() -> None:
    # A read whose data buffers are device-readable (read-only to the device).
    assert status_of(parse([header(T.VIRTIO_BLK_T_IN), bytes(512)], [1])[1]) == IOERR
    # A write whose data buffers are device-writable.
    assert status_of(parse([header(T.VIRTIO_BLK_T_OUT)], [512, 1])[1]) == IOERR
    assert status_of(parse([header(T.VIRTIO_BLK_T_DISCARD) + segment(0, 8)], [16, 1])[1]) == IOERR


def test_read_only_device_refuses_every_write() -> None:
    ro = RequestLimits(capacity=CAP, read_only=True, discard=True, write_zeroes=True,
                       max_discard_sectors=8, max_discard_seg=1,
                       max_write_zeroes_sectors=8, max_write_zeroes_seg=1)  # fmt: skip
    assert status_of(parse([header(T.VIRTIO_BLK_T_OUT), bytes(512)], [1], ro)[1]) == IOERR
    for rtype in (T.VIRTIO_BLK_T_DISCARD, T.VIRTIO_BLK_T_WRITE_ZEROES):
        assert status_of(parse([header(rtype) + segment(0, 8)], [1], ro)[1]) == IOERR
    assert status_of(parse([header(T.VIRTIO_BLK_T_IN)], [512, 1], ro)[1]) == OK
    assert status_of(parse([header(T.VIRTIO_BLK_T_FLUSH)], [1], ro)[1]) == OK


@pytest.mark.parametrize("data", [0, 16, 19, 21, 512])
def test_get_id_needs_exactly_twenty_bytes(data: int) -> None:
    assert status_of(parse([header(T.VIRTIO_BLK_T_GET_ID)], [data, 1] if data else [1])[1]) == IOERR


@pytest.mark.parametrize(
    ("rtype", "body", "status"),
    [
        (T.VIRTIO_BLK_T_DISCARD, b"", IOERR),  # no segment
        (T.VIRTIO_BLK_T_DISCARD, segment(0, 8)[:12], IOERR),  # not whole segments
        (T.VIRTIO_BLK_T_DISCARD, segment(0, 8) * 5, IOERR),  # > max_discard_seg
        (T.VIRTIO_BLK_T_DISCARD, segment(0, 257), IOERR),  # > max_discard_sectors
        (T.VIRTIO_BLK_T_DISCARD, segment(CAP - 8, 16), IOERR),  # past the end
        (T.VIRTIO_BLK_T_DISCARD, segment(2**64 - 8, 16), IOERR),  # wraps
        (T.VIRTIO_BLK_T_DISCARD, segment(0, 8, 1), UNSUPP),  # unmap on a discard
        (T.VIRTIO_BLK_T_DISCARD, segment(0, 8) + segment(0, 8, 4), UNSUPP),  # unknown flag
        (T.VIRTIO_BLK_T_WRITE_ZEROES, segment(0, 8, 2), UNSUPP),
        (T.VIRTIO_BLK_T_WRITE_ZEROES, segment(0, 8) * 3, IOERR),  # > max_write_zeroes_seg
        (T.VIRTIO_BLK_T_WRITE_ZEROES, segment(0, 513), IOERR),
    ],
)
def test_bad_discard_and_write_zeroes(rtype: int, body: bytes, status: int) -> None:
    assert status_of(parse([header(rtype) + body], [1])[1]) == status


def test_discard_and_write_zeroes_not_negotiated_are_unsupp() -> None:
    bare = RequestLimits(capacity=CAP)
    for rtype in (T.VIRTIO_BLK_T_DISCARD, T.VIRTIO_BLK_T_WRITE_ZEROES):
        assert status_of(parse([header(rtype) + segment(0, 8)], [1], bare)[1]) == UNSUPP


def test_negotiated_seg_max_size_max_and_block_size() -> None:
    lim = RequestLimits(capacity=CAP, seg_max=2, size_max=1024, blk_size=4096)
    assert status_of(parse([header(0, 8)], [4096, 1], lim)[1]) == IOERR  # size_max
    assert status_of(parse([header(0, 8)], [1024] * 4 + [1], lim)[1]) == IOERR  # seg_max
    lim = RequestLimits(capacity=CAP, blk_size=4096)
    assert status_of(parse([header(0, 8)], [4096, 1], lim)[1]) == OK
    assert status_of(parse([header(0, 1)], [4096, 1], lim)[1]) == IOERR  # misaligned sector
    assert status_of(parse([header(0, 8)], [1024, 1], lim)[1]) == IOERR  # partial block


def test_slice_segments() -> None:
    segs = ((100, 10), (200, 5), (300, 20))
    assert slice_segments(segs, 0, 35) == segs
    assert slice_segments(segs, 8, 10) == ((108, 2), (200, 5), (300, 3))
    assert slice_segments(segs, 15, 0) == ()


# ------------------------------------------------------------------------- property
TYPES = st.one_of(st.sampled_from([int(t) for t in T]), st.integers(0, 2**32 - 1))


def _split(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=3)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return [p for p in pieces if p]


@st.composite
def plausible(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Mostly well-formed requests with one thing possibly off."""
    rtype = draw(st.sampled_from([int(t) for t in T]))
    sector = draw(st.integers(0, CAP + 2))
    raw = header(rtype, sector)
    nbytes = 512 * draw(st.integers(0, 3)) + draw(st.sampled_from([0, 0, 0, 1, 20]))
    if rtype in (T.VIRTIO_BLK_T_DISCARD, T.VIRTIO_BLK_T_WRITE_ZEROES):
        one = st.tuples(st.integers(0, CAP), st.integers(0, 300), st.sampled_from([0, 0, 1, 2]))
        segs = draw(st.lists(one, min_size=1, max_size=5))
        raw += b"".join(segment(*s) for s in segs)
        writable = [1]
    elif rtype == T.VIRTIO_BLK_T_OUT:
        raw += bytes(nbytes)
        writable = [1]
    else:
        writable = [nbytes, 1] if nbytes else [1]
    if draw(st.booleans()) and len(writable) == 2:
        writable = [writable[0] + 1]  # status in the data descriptor
    return _split(draw, raw), writable


@st.composite
def junk(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Anything at all."""
    rtype = draw(st.one_of(st.sampled_from([int(t) for t in T]), st.integers(0, 2**32 - 1)))
    raw = header(rtype, draw(st.integers(0, 2**64 - 1))) + draw(st.binary(max_size=1100))
    raw = raw[: draw(st.integers(0, len(raw)))]
    return _split(draw, raw), draw(st.lists(st.integers(0, 1100), max_size=4))


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[bytes], list[int], RequestLimits]:
    readable, writable = draw(st.one_of(plausible(), junk()))
    limits = RequestLimits(
        capacity=CAP,
        read_only=draw(st.booleans()),
        flush=draw(st.booleans()),
        discard=draw(st.booleans()),
        write_zeroes=draw(st.booleans()),
        seg_max=draw(st.none() | st.integers(1, 4)),
        size_max=draw(st.none() | st.integers(512, 4096)),
        max_discard_sectors=draw(st.integers(0, 4096)),
        max_discard_seg=draw(st.integers(0, 4)),
        max_write_zeroes_sectors=draw(st.integers(0, 4096)),
        max_write_zeroes_seg=draw(st.integers(0, 4)),
    )
    return readable, writable, limits


@given(requests())
def test_random_chains_never_crash_and_stay_inside_the_chain(
    case: tuple[list[bytes], list[int], RequestLimits],
) -> None:
    readable, writable, limits = case
    flat = FlatMemory(1 << 20)
    chain = ChainMaker(flat).chain(readable, writable)
    guard = GuardedMemory(flat, [*chain.readable, *chain.writable])
    try:
        res = Request.parse(chain, guard, limits)
    except MissingStatusError:
        assert not chain.writable or chain.writable[-1][1] == 0
        return
    guard.assert_clean()
    assert res.status_addr == chain.writable[-1][0] + chain.writable[-1][1] - 1
    if isinstance(res, ParseError):
        assert res.status in (IOERR, UNSUPP)
        return
    inside = (
        chain.writable if res.type in (T.VIRTIO_BLK_T_IN, T.VIRTIO_BLK_T_GET_ID) else chain.readable
    )
    for addr, n in res.data:
        assert any(a <= addr and addr + n <= a + m for a, m in inside)
    assert sum(n for _, n in res.data) == res.data_len
    assert res.status_addr not in range(*(res.data[-1][0], sum(res.data[-1]))) if res.data else True
    if res.type in (T.VIRTIO_BLK_T_IN, T.VIRTIO_BLK_T_OUT):
        assert res.data_len % 512 == 0
        assert res.offset + res.data_len <= CAP * 512
        assert not (res.type == T.VIRTIO_BLK_T_OUT and limits.read_only)
    for rng in res.ranges:
        assert rng.offset + rng.length <= CAP * 512
