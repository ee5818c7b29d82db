"""FrontRing against BackRing on one shared buffer: layout, data, notification hold-off."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from xenvirtio.pvring.ring import (
    PAGE_SIZE,
    BackRing,
    FrontRing,
    RingFull,
    RingLayout,
    StructCodec,
    ring_size,
)

# A request/response pair shaped like netif's tx ring: 12-byte, 4-aligned requests.
REQ = StructCodec(struct.Struct("<IHHHH"), 4, lambda m: m, lambda v: v)
RSP = StructCodec(struct.Struct("<Hh"), 2, lambda m: m, lambda v: v)
WIDE = StructCodec(struct.Struct("<QQ"), 8, lambda m: m, lambda v: v)


def make_pair(order: int = 0) -> tuple[bytearray, FrontRing[tuple, tuple], BackRing[tuple, tuple]]:
    buf = bytearray(PAGE_SIZE << order)
    front: FrontRing[tuple, tuple] = FrontRing(memoryview(buf), REQ, RSP)
    back: BackRing[tuple, tuple] = BackRing(memoryview(buf), REQ, RSP)
    return buf, front, back


def test_layouts_match_ring_h() -> None:
    # __CONST_RING_SIZE: (4096 - 64) / entry, rounded down to a power of two.
    assert ring_size(REQ, RSP) == 256  # NET_TX_RING_SIZE
    assert RingLayout.for_order(REQ, RSP, 0).entry_size == 12
    assert ring_size(WIDE, RSP, 0) == 128
    assert RingLayout.for_codecs(REQ, WIDE, PAGE_SIZE).entry_size == 16  # union alignment
    assert ring_size(REQ, RSP, 2) == 1024
    with pytest.raises(ValueError):
        RingLayout.for_codecs(WIDE, WIDE, 70)


def test_shared_ring_init_sets_event_indices() -> None:
    buf = bytearray(b"\xff" * PAGE_SIZE)
    front: FrontRing[tuple, tuple] = FrontRing(memoryview(buf), REQ, RSP)
    assert front.sring_indices == (0, 1, 0, 1)
    assert bytes(buf[16:64]) == bytes(48)


def test_round_trip_wraps_indices() -> None:
    buf = bytearray(PAGE_SIZE)
    start = 0xFFFFFFFF - 100  # attach just below the 32-bit wrap
    front: FrontRing[tuple, tuple] = FrontRing(memoryview(buf), REQ, RSP, start=start)
    struct.pack_into("<IIII", buf, 0, start, start + 1, start, start + 1)
    back: BackRing[tuple, tuple] = BackRing(memoryview(buf), REQ, RSP, start=start)
    for round_ in range(5):
        sent = [(i, 1, 2, round_, 4) for i in range(front.free_requests())]
        for msg in sent:
            front.put_request(msg)
        with pytest.raises(RingFull):
            front.put_request(sent[0])
        front.push_requests_and_check_notify()
        got = []
        while (req := back.copy_request()) is not None:
            got.append(req)
            back.put_response((req[0], 0))
        assert got == sent
        back.push_responses_and_check_notify()
        answers = []
        while (rsp := front.get_response()) is not None:
            answers.append(rsp[0])
        assert answers == [m[0] for m in sent]
    assert front.req_prod_pvt < start  # wrapped


def test_copy_request_is_a_private_copy() -> None:
    buf, front, back = make_pair()
    front.put_request((7, 1, 2, 3, 4))
    front.push_requests()
    req = back.copy_request()
    buf[64:76] = b"\xee" * 12  # the frontend rewrites the entry after it was read
    assert req == (7, 1, 2, 3, 4)


def test_back_cannot_respond_more_than_it_consumed() -> None:
    _, _, back = make_pair()
    with pytest.raises(RingFull):
        back.put_response((0, 0))


class RingPair(RuleBasedStateMachine):
    """Front and back driven in any order; the model is what each side was sent and
    whether each consumer is asleep (its final check said "no work")."""

    def __init__(self) -> None:
        super().__init__()
        _, self.front, self.back = make_pair()
        self.next_id = 0
        self.sent: list[int] = []  # request ids put, in order
        self.received: list[int] = []  # request ids the back copied out
        self.answered: list[int] = []  # ids the back responded to
        self.got: list[int] = []  # ids the front took back
        self.back_asleep = True  # req_event starts at 1: the first request notifies
        self.front_asleep = True

    @rule(n=st.integers(0, 40))
    def front_puts(self, n: int) -> None:
        for _ in range(min(n, self.front.free_requests())):
            self.front.put_request((self.next_id, 0, 0, 0, 0))
            self.sent.append(self.next_id)
            self.next_id += 1

    @rule()
    def front_pushes(self) -> None:
        new_work = self.front.req_prod_pvt != self.back.sring_indices[0]
        notify = self.front.push_requests_and_check_notify()
        # Nothing lost: a sleeping back is always woken; suppression: an awake one never.
        assert notify == (new_work and self.back_asleep)
        if notify:
            self.back_asleep = False

    @rule(n=st.integers(1, 40))
    @precondition(lambda self: not self.back_asleep)
    def back_consumes(self, n: int) -> None:
        for _ in range(n):
            req = self.back.copy_request()
            if req is None:
                break
            self.received.append(req[0])

    @rule()
    @precondition(lambda self: not self.back_asleep)
    def back_final_check(self) -> None:
        pending = self.back.final_check_for_requests()
        assert pending == (len(self.received) < self.published_requests())
        self.back_asleep = not pending

    @rule(n=st.integers(1, 40))
    def back_responds(self, n: int) -> None:
        for req_id in self.received[len(self.answered) : len(self.answered) + n]:
            self.back.put_response((req_id, 0))
            self.answered.append(req_id)

    @rule()
    def back_pushes(self) -> None:
        new_work = self.back.rsp_prod_pvt != self.back.sring_indices[2]
        notify = self.back.push_responses_and_check_notify()
        assert notify == (new_work and self.front_asleep)
        if notify:
            self.front_asleep = False

    @rule(n=st.integers(1, 40))
    @precondition(lambda self: not self.front_asleep)
    def front_takes(self, n: int) -> None:
        for _ in range(n):
            rsp = self.front.get_response()
            if rsp is None:
                break
            self.got.append(rsp[0])

    @rule()
    @precondition(lambda self: not self.front_asleep)
    def front_final_check(self) -> None:
        pending = self.front.final_check_for_responses()
        assert pending == (len(self.got) < self.published_responses())
        self.front_asleep = not pending

    def published_requests(self) -> int:
        return (self.back.sring_indices[0] - 0) & 0xFFFFFFFF

    def published_responses(self) -> int:
        return self.back.sring_indices[2]

    @invariant()
    def fifo_and_bounded(self) -> None:
        assert self.received == self.sent[: len(self.received)]
        assert self.got == self.answered[: len(self.got)]
        assert 0 <= self.front.free_requests() <= self.front.nr_ents
        assert len(self.sent) - len(self.got) <= self.front.nr_ents


TestRingPair = RingPair.TestCase


@given(st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_batches_all_arrive_with_one_notification_each_sleep(batches: list[int]) -> None:
    _, front, back = make_pair()
    delivered = 0
    for batch in batches:
        n = min(batch, front.free_requests())
        for i in range(n):
            front.put_request((delivered + i, 0, 0, 0, 0))
        assert front.push_requests_and_check_notify() == (n > 0)  # the back always sleeps
        while True:
            while (req := back.copy_request()) is not None:
                assert req[0] == delivered
                delivered += 1
                back.put_response((req[0], 0))
            if not back.final_check_for_requests():
                break
        back.push_responses()
        while front.get_response() is not None:
            pass
    assert delivered == sum(min(b, front.nr_ents) for b in batches)
