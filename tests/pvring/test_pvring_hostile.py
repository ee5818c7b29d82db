"""A peer that writes arbitrary shared indices gets typed errors, never more entries than
can exist."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.pvring.ring import (
    PAGE_SIZE,
    REQ_PROD_OFF,
    RSP_PROD_OFF,
    BackRing,
    FrontRing,
    RingProducerOverflow,
    StructCodec,
)

REQ = StructCodec(struct.Struct("<QQ"), 8, lambda m: m, lambda v: v)
RSP = StructCodec(struct.Struct("<Q"), 8, lambda m: m, lambda v: v)
u32 = st.integers(0, 0xFFFFFFFF)


def test_request_producer_overflow_is_detected() -> None:
    buf = bytearray(PAGE_SIZE)
    back: BackRing[tuple, tuple] = BackRing(memoryview(buf), REQ, RSP)
    n = back.nr_ents
    struct.pack_into("<I", buf, REQ_PROD_OFF, n)
    assert back.unconsumed_requests() == n  # exactly a full ring is allowed
    struct.pack_into("<I", buf, REQ_PROD_OFF, n + 1)  # RING_REQUEST_PROD_OVERFLOW
    with pytest.raises(RingProducerOverflow):
        back.copy_request()


def test_request_producer_moving_backwards_is_detected() -> None:
    buf = bytearray(PAGE_SIZE)
    back: BackRing[tuple, tuple] = BackRing(memoryview(buf), REQ, RSP)
    struct.pack_into("<I", buf, REQ_PROD_OFF, 5)
    for _ in range(5):
        assert back.copy_request() is not None
    struct.pack_into("<I", buf, REQ_PROD_OFF, 3)
    with pytest.raises(RingProducerOverflow):
        back.unconsumed_requests()


@given(prod=u32, consumed=st.integers(0, 64), answered=st.integers(0, 64))
def test_back_never_reads_more_than_the_ring_holds(prod: int, consumed: int, answered: int) -> None:
    buf = bytearray(PAGE_SIZE)
    back: BackRing[tuple, tuple] = BackRing(memoryview(buf), REQ, RSP)
    struct.pack_into("<I", buf, REQ_PROD_OFF, min(consumed, back.nr_ents))
    for _ in range(min(consumed, back.nr_ents)):
        back.copy_request()
    for _ in range(min(answered, back.req_cons)):
        back.put_response((0,))
    struct.pack_into("<I", buf, REQ_PROD_OFF, prod)
    ahead = (prod - back.rsp_prod_pvt) & 0xFFFFFFFF
    behind = ahead < back.req_cons - back.rsp_prod_pvt
    try:
        n = back.unconsumed_requests()
    except RingProducerOverflow:
        assert ahead > back.nr_ents or behind
        return
    assert not behind and ahead <= back.nr_ents
    assert n == (prod - back.req_cons) & 0xFFFFFFFF
    assert (back.req_cons + n - back.rsp_prod_pvt) <= back.nr_ents


@given(rsp_prod=u32, outstanding=st.integers(0, 64))
def test_front_rejects_responses_it_never_asked_for(rsp_prod: int, outstanding: int) -> None:
    buf = bytearray(PAGE_SIZE)
    front: FrontRing[tuple, tuple] = FrontRing(memoryview(buf), REQ, RSP)
    for i in range(min(outstanding, front.nr_ents)):
        front.put_request((i, 0))
    front.push_requests()
    struct.pack_into("<I", buf, RSP_PROD_OFF, rsp_prod)
    try:
        n = front.unconsumed_responses()
    except RingProducerOverflow:
        assert rsp_prod > front.req_prod_pvt
        return
    assert n == rsp_prod <= front.req_prod_pvt


@given(garbage=st.binary(min_size=64, max_size=64), steps=st.integers(1, 50))
def test_garbage_header_only_ever_yields_typed_errors(garbage: bytes, steps: int) -> None:
    buf = bytearray(PAGE_SIZE)
    buf[:64] = garbage
    back: BackRing[tuple, tuple] = BackRing(memoryview(buf), REQ, RSP)
    taken = 0
    try:
        for _ in range(steps):
            if back.copy_request() is None:
                break
            taken += 1
            back.put_response((0,))
            back.push_responses_and_check_notify()
        back.final_check_for_requests()
    except RingProducerOverflow:
        pass
    assert taken <= steps
