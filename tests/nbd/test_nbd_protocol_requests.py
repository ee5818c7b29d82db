"""The sans-I/O NBD state machine: requests, replies and hostile byte streams."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbd_support import C_FLAGS, go_data, option, request
from sansio_support import (
    CMD,
    EXPORT,
    FLAG,
    SIZE,
    drain,
    transmitting,
)

from xenvirtio.nbd.events import (
    NEED_DATA,
    ConnectionClosed,
    Disconnect,
    ExportInfo,
    LocalProtocolError,
    NbdProtocolError,
    Reply,
    Request,
    RequestRejected,
)
from xenvirtio.nbd.protocol import NbdServerProtocol, NbdState
from xenvirtio.spec.nbd import (
    NBD_MAX_PAYLOAD,
    NBD_SIMPLE_REPLY_MAGIC,
    SIMPLE_REPLY,
    NbdError,
    NbdOpt,
)


def test_read_request_and_its_reply() -> None:
    conn = transmitting()
    conn.receive_data(request(CMD.NBD_CMD_READ, 7, 512, 1024))
    (event,) = drain(conn)
    assert event == Request(CMD.NBD_CMD_READ, 7, 512, 1024, FLAG(0))
    assert conn.in_flight == 1
    out = conn.send(Reply(7, data=b"x" * 1024))
    assert SIMPLE_REPLY.unpack_from(out) == (NBD_SIMPLE_REPLY_MAGIC, 0, 7)
    assert out[SIMPLE_REPLY.size :] == b"x" * 1024
    assert conn.in_flight == 0


def test_write_payload_is_collected_across_chunks() -> None:
    conn = transmitting()
    wire = request(CMD.NBD_CMD_WRITE, 1, 0, 1024, FLAG.NBD_CMD_FLAG_FUA, b"w" * 1024)
    for i in range(0, len(wire), 100):
        assert drain(conn) == []
        conn.receive_data(wire[i : i + 100])
    (event,) = drain(conn)
    assert isinstance(event, Request) and event.data == b"w" * 1024 and event.fua


def test_replies_may_go_out_of_order_and_handles_may_repeat() -> None:
    conn = transmitting()
    conn.receive_data(
        request(CMD.NBD_CMD_READ, 5, 0, 512)
        + request(CMD.NBD_CMD_FLUSH, 6)
        + request(CMD.NBD_CMD_READ, 5, 0, 1024)
    )
    assert len(drain(conn)) == 3 and conn.in_flight == 3
    conn.send(Reply(6))
    conn.send(Reply(5, data=bytes(1024)))
    with pytest.raises(LocalProtocolError, match="matches no request"):
        conn.send(Reply(5, data=bytes(1024)))
    conn.send(Reply(5, NbdError.NBD_EIO))
    assert conn.in_flight == 0
    with pytest.raises(LocalProtocolError, match="no request in flight"):
        conn.send(Reply(5))


REJECTIONS = [
    (request(CMD.NBD_CMD_READ, 1, SIZE - 512, 1024), NbdError.NBD_EINVAL),
    (request(CMD.NBD_CMD_WRITE, 1, SIZE, 512, data=bytes(512)), NbdError.NBD_ENOSPC),
    (request(CMD.NBD_CMD_TRIM, 1, 0, SIZE + 512), NbdError.NBD_EINVAL),
    (request(CMD.NBD_CMD_WRITE_ZEROES, 1, 1 << 62, 512), NbdError.NBD_ENOSPC),
    (request(CMD.NBD_CMD_READ, 1, 0xFFFF_FFFF_FFFF_FE00, 512), NbdError.NBD_EINVAL),
    (request(42, 1), NbdError.NBD_EINVAL),
    (request(CMD.NBD_CMD_CACHE, 1, 0, 512), NbdError.NBD_EINVAL),
    (request(CMD.NBD_CMD_BLOCK_STATUS, 1, 0, 512), NbdError.NBD_EINVAL),
    (request(CMD.NBD_CMD_READ, 1, 0, 512, FLAG.NBD_CMD_FLAG_DF), NbdError.NBD_EINVAL),
    (
        request(CMD.NBD_CMD_WRITE, 1, 0, 512, FLAG.NBD_CMD_FLAG_NO_HOLE, bytes(512)),
        NbdError.NBD_EINVAL,
    ),
    (request(CMD.NBD_CMD_WRITE_ZEROES, 1, 0, 512, 0x8000), NbdError.NBD_EINVAL),
    (request(CMD.NBD_CMD_READ, 1, 100, 512), NbdError.NBD_EINVAL),  # unaligned
    (request(CMD.NBD_CMD_WRITE, 1, 0, 100, data=bytes(100)), NbdError.NBD_EINVAL),
    (request(CMD.NBD_CMD_READ, 1, 0, NBD_MAX_PAYLOAD + 512), NbdError.NBD_EOVERFLOW),
]


@pytest.mark.parametrize(("wire", "error"), REJECTIONS)
def test_bad_requests_get_an_error_and_the_stream_stays_in_sync(wire: bytes, error: int) -> None:
    conn = transmitting()
    conn.receive_data(wire + request(CMD.NBD_CMD_READ, 2, 0, 512))
    rejected, following = drain(conn)
    assert isinstance(rejected, RequestRejected) and rejected.error == error
    assert following == Request(CMD.NBD_CMD_READ, 2, 0, 512, FLAG(0))
    header = conn.send(Reply(1, rejected.error))
    assert SIMPLE_REPLY.unpack(header) == (NBD_SIMPLE_REPLY_MAGIC, error, 1)


@pytest.mark.parametrize(
    ("command", "data"),
    [(CMD.NBD_CMD_WRITE, bytes(512)), (CMD.NBD_CMD_TRIM, b""), (CMD.NBD_CMD_WRITE_ZEROES, b"")],
)
def test_writes_to_a_read_only_export_are_eperm(command: int, data: bytes) -> None:
    conn = transmitting(ExportInfo("", SIZE, read_only=True))
    conn.receive_data(request(command, 3, 0, 512, data=data) + request(CMD.NBD_CMD_FLUSH, 4))
    rejected, flush = drain(conn)
    assert isinstance(rejected, RequestRejected) and rejected.error == NbdError.NBD_EPERM
    assert isinstance(flush, Request) and flush.command == CMD.NBD_CMD_FLUSH


def test_rejected_write_payload_is_skipped_without_buffering() -> None:
    conn = transmitting(ExportInfo("", SIZE, read_only=True))
    conn.receive_data(request(CMD.NBD_CMD_WRITE, 3, 0, 1 << 20))
    events = []
    for _ in range(16):
        conn.receive_data(bytes(1 << 16))
        events += drain(conn)
        assert len(conn._buf) == 0  # dropped as it arrives
    assert [type(e) for e in events] == [RequestRejected]


def test_oversize_write_is_fatal_on_its_header() -> None:
    conn = transmitting()
    conn.receive_data(request(CMD.NBD_CMD_WRITE, 1, 0, NBD_MAX_PAYLOAD + 1))
    with pytest.raises(NbdProtocolError, match="maximum payload"):
        conn.next_event()


def test_bad_request_magic_is_fatal() -> None:
    conn = transmitting()
    conn.receive_data(request(CMD.NBD_CMD_READ, 1, 0, 512, magic=0x12345678))
    with pytest.raises(NbdProtocolError, match="request magic"):
        conn.next_event()


@pytest.mark.parametrize(
    "wire",
    [
        request(CMD.NBD_CMD_READ, 1)[:20],
        request(CMD.NBD_CMD_WRITE, 1, 0, 4096, data=bytes(100)),
        request(CMD.NBD_CMD_WRITE, 1, SIZE, 4096, data=bytes(100)),  # rejected, being skipped
    ],
)
def test_end_of_stream_inside_a_message_is_an_error(wire: bytes) -> None:
    conn = transmitting()
    conn.receive_data(wire)
    assert drain(conn) == []
    conn.receive_data(b"")
    with pytest.raises(NbdProtocolError, match="closed"):
        conn.next_event()


def test_end_of_stream_between_messages_is_connection_closed() -> None:
    conn = transmitting()
    conn.receive_data(b"")
    assert drain(conn) == [ConnectionClosed()]
    assert conn.state is NbdState.CLOSED


def test_disc_is_a_soft_disconnect_and_later_bytes_are_dropped() -> None:
    conn = transmitting()
    conn.receive_data(request(CMD.NBD_CMD_READ, 1, 0, 512) + request(CMD.NBD_CMD_DISC, 2))
    assert [type(e) for e in drain(conn)] == [Request, Disconnect]
    conn.receive_data(b"garbage after DISC")
    assert conn.next_event() == ConnectionClosed()
    assert conn.send(Reply(1, data=bytes(512)))  # the request in flight is still answered


# --- properties ---


def _events_and_output(conn: NbdServerProtocol, chunks: list[bytes]) -> tuple[list[object], bytes]:
    events: list[object] = []
    out = conn.data_to_send()
    try:
        for chunk in [*(c for c in chunks if c), b""]:  # b"": end of stream, last
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(event)
                if isinstance(event, (Disconnect, ConnectionClosed)):
                    break
            out += conn.data_to_send()
            if conn.state is NbdState.CLOSED:
                break
    except NbdProtocolError:
        events.append("error")
        out += conn.data_to_send()
    return events, out


pieces_st = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.builds(option, st.integers(0, 12), st.binary(max_size=24)),
        st.builds(
            request,
            st.integers(0, 9),
            st.integers(0, 3),
            st.sampled_from([0, 512, SIZE - 512, SIZE, 2**64 - 512]),
            st.sampled_from([0, 100, 512, 1024]),
            st.sampled_from([0, 1, 2, 4, 0x8000]),
        ),
    ),
    max_size=12,
)


@settings(max_examples=150)
@given(pieces_st, st.data())
def test_any_bytes_only_ever_raise_nbd_protocol_error_and_chunking_is_irrelevant(
    pieces: list[bytes], data: st.DataObject
) -> None:
    handshake = struct.pack(">I", C_FLAGS) + option(NbdOpt.NBD_OPT_GO, go_data())
    prefix = data.draw(st.sampled_from([b"", struct.pack(">I", C_FLAGS), handshake]))
    stream = prefix + b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole = _events_and_output(NbdServerProtocol(EXPORT), [stream])
    split = _events_and_output(NbdServerProtocol(EXPORT), chunks)
    bytewise = _events_and_output(NbdServerProtocol(EXPORT), [bytes([b]) for b in stream])
    assert whole == split == bytewise


requests_st = st.lists(
    st.tuples(
        st.sampled_from([CMD.NBD_CMD_READ, CMD.NBD_CMD_WRITE, CMD.NBD_CMD_TRIM, CMD.NBD_CMD_FLUSH]),
        st.integers(0, 2**64 - 1),
        st.integers(0, SIZE // 512 + 2).map(lambda n: n * 512),
        st.integers(0, 8).map(lambda n: n * 512),
    ),
    max_size=20,
)


@given(requests_st)
def test_well_formed_requests_match_a_model(reqs: list[tuple[int, int, int, int]]) -> None:
    conn = transmitting()
    wire = b"".join(
        request(c, h, o, n, data=bytes(n) if c == CMD.NBD_CMD_WRITE else b"") for c, h, o, n in reqs
    )
    if wire:
        conn.receive_data(wire)
    events = drain(conn)
    assert len(events) == len(reqs) == conn.in_flight
    for (command, handle, offset, length), event in zip(reqs, events, strict=True):
        in_bounds = command == CMD.NBD_CMD_FLUSH or offset + length <= SIZE
        assert isinstance(event, Request if in_bounds else RequestRejected)
        assert event.handle == handle
