"""The pure parts of emu: event channel table, grant table, range sets, codec, layouts."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.hv.api import GrantError, HypervisorError
from xenvirtio.hv.emu.channels import EventChannels, EventfdOps
from xenvirtio.hv.emu.granttable import GrantTable
from xenvirtio.hv.emu.ioreq import RangeSet
from xenvirtio.hv.emu.pagemap import PAGE_SIZE, PageMap
from xenvirtio.hv.emu.protocol import (
    ProtocolError,
    Reply,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from xenvirtio.spec.event_channel import (
    EVTCHNSTAT_closed,
    EVTCHNSTAT_interdomain,
    EVTCHNSTAT_unbound,
)
from xenvirtio.spec.grant_table import (
    GRANT_ENTRY_V1,
    GNTST_bad_gntref,
    GTF_permit_access,
    GTF_reading,
    GTF_readonly,
    GTF_writing,
)
from xenvirtio.spec.ioreq import (
    IOREQ,
    IOREQ_READ,
    STATE_IOREQ_READY,
    Ioreq,
    pack_ioreq,
    unpack_ioreq,
)


class FakeEventfds:
    def __init__(self) -> None:
        self.open: dict[int, int] = {}
        self.next = 100

    def ops(self) -> EventfdOps:
        return EventfdOps(self.new, self.close, self.signal, self.drain)

    def new(self) -> int:
        self.next += 1
        self.open[self.next] = 0
        return self.next

    def close(self, fd: int) -> None:
        del self.open[fd]

    def signal(self, fd: int) -> None:
        self.open[fd] += 1

    def drain(self, fd: int) -> None:
        self.open[fd] = 0


def test_channel_close_leaves_survivor_unbound_towards_closer() -> None:
    fds = FakeEventfds()
    ch = EventChannels(fds.ops())
    ch.add_domain(0)
    ch.add_domain(7)
    a = ch.alloc_unbound(0, 7, owner=1)
    assert ch.status(0, a) == (EVTCHNSTAT_unbound, 7, None, None)
    with pytest.raises(HypervisorError):
        ch.bind_interdomain(0, 0, a, owner=1)  # offered to 7, not 0
    b = ch.bind_interdomain(7, 0, a, owner=2)
    assert ch.status(0, a) == (EVTCHNSTAT_interdomain, 7, b, None)
    inbound_a, outbound_a = ch.fds(0, a)
    assert ch.fds(7, b) == (outbound_a, inbound_a)
    ch.close(7, b)
    assert fds.open[inbound_a] == 1  # the survivor was kicked
    assert ch.status(0, a) == (EVTCHNSTAT_unbound, 7, None, None)
    assert ch.status(7, b) == (EVTCHNSTAT_closed, None, None, None)
    b2 = ch.bind_interdomain(7, 0, a, owner=3)
    assert ch.fds(7, b2) == (outbound_a, inbound_a)  # same eventfds: a's notify reaches b2
    ch.remove_domain(7)
    ch.remove_domain(0)
    assert fds.open == {}


def test_grant_table_pins_and_flags() -> None:
    table = GrantTable(memoryview(bytearray(8 * 64)), nr_frames_of_owner=16)
    table.write_entry(8, GTF_permit_access | GTF_readonly, 3, 5)
    assert table.check_access(8, 3, writable=False) == 5
    with pytest.raises(GrantError):
        table.check_access(8, 3, writable=True)
    with pytest.raises(GrantError) as info:
        table.check_access(64, 3, writable=False)
    assert info.value.status == GNTST_bad_gntref
    table.write_entry(9, GTF_permit_access, 3, 6)
    table.pin(9, writable=True)
    table.pin(9, writable=False)
    flags = GRANT_ENTRY_V1.unpack_from(table.table, 9 * 8)[0]
    assert flags & (GTF_reading | GTF_writing) == GTF_reading | GTF_writing
    with pytest.raises(GrantError) as info:
        table.end_access(9)
    assert info.value.errno == errno.EBUSY
    table.unpin(9, writable=True)
    assert GRANT_ENTRY_V1.unpack_from(table.table, 9 * 8)[0] & GTF_writing == 0
    table.unpin(9, writable=False)
    table.end_access(9)
    assert GRANT_ENTRY_V1.unpack_from(table.table, 9 * 8) == (0, 0, 0)
    refs = table.alloc_refs(3)
    assert refs == [8, 9, 10]
    table.free_refs([9])
    assert table.alloc_refs(1) == [9]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 60), st.integers(0, 8)), max_size=40))
def test_range_set_matches_a_model(ops: list[tuple[bool, int, int]]) -> None:
    ranges = RangeSet()
    model: set[int] = set()
    for add, start, length in ops:
        span = set(range(start, start + length + 1))
        try:
            (ranges.add if add else ranges.remove)(start, start + length)
        except HypervisorError as exc:
            assert exc.errno == (errno.EEXIST if add else errno.ENOENT)
            assert bool(span & model) if add else not span <= model
            continue
        assert not span & model if add else span <= model
        model = model | span if add else model - span
    assert {v for v in range(0, 80) if v in ranges} == model


@given(st.binary(max_size=300))
def test_decode_request_rejects_garbage_cleanly(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_request(data)


@given(
    st.sampled_from(["evtchn.notify", "gnttab.map", "evtchn.bind_interdomain", "domctl.create"]),
    st.dictionaries(
        st.sampled_from(["domid", "refs", "writable", "remote_domid", "remote_port", "x"]),
        st.one_of(
            st.integers(-(2**70), 2**70),
            st.booleans(),
            st.none(),
            st.text(max_size=4),
            st.lists(st.integers(), max_size=3),
        ),
    ),
)
def test_decode_request_checks_every_argument(op: str, args: dict[str, object]) -> None:
    try:
        request = decode_request(encode_request(op, args))
    except ProtocolError:
        return
    assert request.op == op and dict(request.args) == args


def test_codec_round_trip_and_depth_bomb() -> None:
    request = decode_request(encode_request("gnttab.unmap", {"handle": 5}, b"blob"))
    assert (request.op, dict(request.args), request.blob) == (
        "gnttab.unmap",
        {"handle": 5},
        b"blob",
    )
    bomb = b"[" * 100000
    with pytest.raises(ProtocolError):
        decode_request(len(bomb).to_bytes(4, "little") + bomb)
    reply = decode_reply(encode_reply(Reply(error="EBUSY", message="mapped", gntst=-1)))
    assert (reply.error, reply.gntst) == ("EBUSY", -1)


def test_ioreq_layout_matches_the_header() -> None:
    assert IOREQ.size == 32
    req = Ioreq(0x1000, 0xAB, 1, 4, 9, STATE_IOREQ_READY, True, IOREQ_READ, True, 1)
    raw = pack_ioreq(req)
    # state:4 | data_is_ptr:1 | dir:1 | df:1 from the low bit of byte 30; type is byte 31
    assert raw[30] == STATE_IOREQ_READY | 1 << 4 | 1 << 5 | 1 << 6
    assert raw[31] == 1 and raw[24:28] == (9).to_bytes(4, "little")
    assert unpack_ioreq(raw) == req


def test_pagemap_places_pages_and_revokes() -> None:
    fd = os.memfd_create("t")
    try:
        os.ftruncate(fd, 4 * PAGE_SIZE)
        with mmap.mmap(fd, 4 * PAGE_SIZE) as whole:
            whole[3 * PAGE_SIZE : 3 * PAGE_SIZE + 2] = b"p3"
            whole[PAGE_SIZE : PAGE_SIZE + 2] = b"p1"
            pages = PageMap(fd, [3 * PAGE_SIZE, PAGE_SIZE], writable=True)
            stale = pages.memory[PAGE_SIZE : PAGE_SIZE + 2]
            assert bytes(pages.memory[0:2]) == b"p3" and bytes(stale) == b"p1"
            pages.memory[PAGE_SIZE : PAGE_SIZE + 2] = b"P1"
            assert whole[PAGE_SIZE : PAGE_SIZE + 2] == b"P1"
            pages.revoke()
            assert bytes(stale) == b"\0\0"  # a stale view reads zeros, not guest memory
            stale[0:2] = b"xx"
            assert whole[PAGE_SIZE : PAGE_SIZE + 2] == b"P1"
            readonly = PageMap(fd, [0], writable=False)
            assert readonly.memory.readonly
            readonly.revoke()
    finally:
        os.close(fd)
