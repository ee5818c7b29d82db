"""A shared ring index is published with one store: the peer never reads a value in between.

The peer reads ``req_prod``/``rsp_prod``/``req_event``/``rsp_event`` from another process
at any instant. The value written here is an object whose ``__index__`` runs while the
store is under way (after any clearing of the target, before the final write): from
there it reads the field as the peer would. ``struct.pack_into`` clears the field first,
so the peer saw a producer index of 0 and took the ring for overflowed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from xenvirtio.pvring.ring import (
    PAGE_SIZE,
    REQ_EVENT_OFF,
    REQ_PROD_OFF,
    RSP_EVENT_OFF,
    RSP_PROD_OFF,
    BackRing,
    FrontRing,
    StructCodec,
    store_index,
)

REQ = StructCodec(struct.Struct("<IHHHH"), 4, lambda m: m, lambda v: v)
RSP = StructCodec(struct.Struct("<Hh"), 2, lambda m: m, lambda v: v)
START = 0x6CD  # a ring well past its first lap


class Midstore:
    """An index value that calls ``probe`` when the store converts it."""

    def __init__(self, value: int, probe: Callable[[], None]) -> None:
        self.value = value
        self.probe = probe

    def __and__(self, mask: int) -> Midstore:
        return Midstore(self.value & mask, self.probe)

    def __index__(self) -> int:
        self.probe()
        return self.value


def load(buf: memoryview, off: int) -> int:
    return int.from_bytes(buf[off : off + 4], "little")


@pytest.mark.parametrize("off", [REQ_PROD_OFF, REQ_EVENT_OFF, RSP_PROD_OFF, RSP_EVENT_OFF])
def test_a_store_never_shows_a_cleared_field(off: int) -> None:
    buf = memoryview(bytearray(PAGE_SIZE))
    store_index(buf, off, 0x12345678)
    seen: list[int] = []
    store_index(buf, off, Midstore(0x12345679, lambda: seen.append(load(buf, off))))  # type: ignore[arg-type]
    assert seen == [0x12345678]  # the old value while the store is under way
    assert load(buf, off) == 0x12345679
    assert bytes(buf[off : off + 4]) == struct.pack("<I", 0x12345679)  # little-endian
    store_index(buf, off, 0x1_0000_0002)
    assert load(buf, off) == 2  # RING_IDX wraps at 2**32


def pair_at(start: int) -> tuple[FrontRing[tuple, tuple], BackRing[tuple, tuple]]:
    """Front and back attached to one page at ``start``, everything before answered."""
    buf = memoryview(bytearray(PAGE_SIZE))
    front: FrontRing[tuple, tuple] = FrontRing(buf, REQ, RSP, start=start)
    front.push_requests()
    back: BackRing[tuple, tuple] = BackRing(buf, REQ, RSP, start=start)
    back.push_responses()
    return front, back


def test_back_polling_while_front_publishes_req_prod() -> None:
    front, back = pair_at(START)
    front.put_request((7, 0, 0, 0, 0))
    seen: list[int] = []
    # The backend polls the ring (RING_HAS_UNCONSUMED_REQUESTS) mid-publish; a cleared
    # req_prod raised RingProducerOverflow ("req_prod 0x0 ... past 0x6cd") and failed
    # the device.
    front.req_prod_pvt = Midstore(START + 1, lambda: seen.append(back.unconsumed_requests()))  # type: ignore[assignment]
    front.push_requests()
    assert seen == [0]
    assert back.copy_request() == (7, 0, 0, 0, 0)


def test_front_polling_while_back_publishes_rsp_prod() -> None:
    front, back = pair_at(START)
    front.put_request((7, 0, 0, 0, 0))
    front.push_requests()
    assert back.copy_request() is not None
    back.put_response((7, 0))
    seen: list[int] = []
    back.rsp_prod_pvt = Midstore(START + 1, lambda: seen.append(front.unconsumed_responses()))  # type: ignore[assignment]
    back.push_responses()
    assert seen == [0]
    assert front.get_response() == (7, 0)


def test_front_reading_req_event_mid_store_still_notifies() -> None:
    front, back = pair_at(START)
    assert not back.final_check_for_requests()  # armed: req_event = START + 1
    decisions: list[bool] = []

    def front_pushes() -> None:
        # The front publishes a request while the back writes req_event again (the
        # same value, as the next final check does): a cleared req_event made it skip
        # the notification the back asked for, and the back slept on a non-empty ring.
        front.put_request((1, 0, 0, 0, 0))
        decisions.append(front.push_requests_and_check_notify())

    store_index(back.buf, REQ_EVENT_OFF, Midstore(START + 1, front_pushes))  # type: ignore[arg-type]
    assert decisions == [True]
