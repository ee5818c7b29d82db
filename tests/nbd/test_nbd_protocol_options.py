"""The sans-I/O NBD state machine: handshake and option haggling, byte by byte."""

from __future__ import annotations

import struct

import pytest
from nbd_support import C_FLAGS, go_data, option
from sansio_support import (
    EXPORT,
    SIZE,
    answer,
    drain,
    negotiating,
    parse_option_replies,
)

from xenvirtio.nbd.events import (
    Disconnect,
    ExportInfo,
    NbdProtocolError,
    TransmissionStarted,
)
from xenvirtio.nbd.protocol import MAX_OPTION_DATA, NbdServerProtocol, NbdState
from xenvirtio.spec.nbd import (
    EXPORT_NAME_ZEROES,
    HANDSHAKE,
    IHAVEOPT,
    INFO_BLOCK_SIZE,
    INFO_EXPORT,
    NBD_MAX_PAYLOAD,
    NBDMAGIC,
    NbdClientFlag,
    NbdHandshakeFlag,
    NbdInfo,
    NbdOpt,
    NbdRep,
)
from xenvirtio.spec.nbd import NbdTransmissionFlag as TF


def test_greeting_is_fixed_newstyle_with_no_zeroes() -> None:
    magic, opt_magic, flags = HANDSHAKE.unpack(NbdServerProtocol(EXPORT).data_to_send())
    assert (magic, opt_magic) == (NBDMAGIC, IHAVEOPT)
    assert flags == NbdHandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE | NbdHandshakeFlag.NBD_FLAG_NO_ZEROES


def test_unknown_client_flags_close_the_connection_and_latch() -> None:
    conn = NbdServerProtocol(EXPORT)
    conn.receive_data(struct.pack(">I", C_FLAGS | 0x80))
    with pytest.raises(NbdProtocolError, match="client flags"):
        conn.next_event()
    assert conn.state is NbdState.ERROR
    with pytest.raises(NbdProtocolError):
        conn.next_event()


def test_bad_option_magic_is_fatal() -> None:
    conn = negotiating()
    conn.receive_data(option(NbdOpt.NBD_OPT_LIST, magic=NBDMAGIC))
    with pytest.raises(NbdProtocolError, match="IHAVEOPT"):
        conn.next_event()


def test_huge_option_length_is_fatal_before_any_data_is_buffered() -> None:
    conn = negotiating()
    conn.receive_data(option(NbdOpt.NBD_OPT_GO, length=0xFFFF_FFFF))  # header only
    with pytest.raises(NbdProtocolError, match="4294967295"):
        conn.next_event()


def test_option_just_within_the_bound_is_answered() -> None:
    conn = negotiating()
    replies = answer(conn, 0x4242, bytes(MAX_OPTION_DATA))
    assert [r[:2] for r in replies] == [(0x4242, NbdRep.NBD_REP_ERR_UNSUP)]


@pytest.mark.parametrize(
    "opt",
    [NbdOpt.NBD_OPT_STRUCTURED_REPLY, NbdOpt.NBD_OPT_STARTTLS, NbdOpt.NBD_OPT_SET_META_CONTEXT, 99],
)
def test_unsupported_options_get_err_unsup_and_haggling_goes_on(opt: int) -> None:
    conn = negotiating()
    assert [r[:2] for r in answer(conn, opt)] == [(opt, NbdRep.NBD_REP_ERR_UNSUP)]
    assert conn.state is NbdState.OPTIONS


def test_list_names_the_export_then_acks() -> None:
    replies = answer(negotiating(), NbdOpt.NBD_OPT_LIST)
    assert [r[1] for r in replies] == [NbdRep.NBD_REP_SERVER, NbdRep.NBD_REP_ACK]
    payload = replies[0][2]
    (name_len,) = struct.unpack_from(">I", payload)
    assert payload[4 : 4 + name_len] == b"disk"
    assert payload[4 + name_len :] == b"test disk"


def test_list_with_data_is_invalid() -> None:
    replies = answer(negotiating(), NbdOpt.NBD_OPT_LIST, b"x")
    assert [r[1] for r in replies] == [NbdRep.NBD_REP_ERR_INVALID]


@pytest.mark.parametrize("name", [b"", b"disk"])
def test_info_describes_the_export_and_stays_in_haggling(name: bytes) -> None:
    conn = negotiating()
    infos = (NbdInfo.NBD_INFO_NAME, NbdInfo.NBD_INFO_DESCRIPTION, 0x7777)
    replies = answer(conn, NbdOpt.NBD_OPT_INFO, go_data(name, infos))
    assert replies[-1][1] == NbdRep.NBD_REP_ACK
    items = {struct.unpack_from(">H", r[2])[0]: r[2] for r in replies[:-1]}
    assert all(r[1] == NbdRep.NBD_REP_INFO for r in replies[:-1])
    _, size, flags = INFO_EXPORT.unpack(items[NbdInfo.NBD_INFO_EXPORT])
    assert size == SIZE and flags == EXPORT.transmission_flags
    assert INFO_BLOCK_SIZE.unpack(items[NbdInfo.NBD_INFO_BLOCK_SIZE])[1:] == (
        512,
        4096,
        NBD_MAX_PAYLOAD,
    )
    assert items[NbdInfo.NBD_INFO_NAME][2:] == b"disk"
    assert items[NbdInfo.NBD_INFO_DESCRIPTION][2:] == b"test disk"
    assert set(items) == {0, 1, 2, 3}  # the unknown request 0x7777 is ignored
    assert conn.state is NbdState.OPTIONS


@pytest.mark.parametrize(
    "data",
    [
        b"\0\0\0",  # shorter than 6
        struct.pack(">I", 100) + b"ab\0\0",  # name length overruns
        go_data(b"", (0, 3))[:-1],  # count does not match
        go_data(b"d\0sk"),  # NUL in name
        go_data(b"\xff\xfe"),  # not UTF-8
    ],
)
def test_malformed_info_is_invalid_and_a_later_go_still_works(data: bytes) -> None:
    conn = negotiating()
    assert [r[1] for r in answer(conn, NbdOpt.NBD_OPT_GO, data)] == [NbdRep.NBD_REP_ERR_INVALID]
    conn.receive_data(option(NbdOpt.NBD_OPT_GO, go_data(b"disk")))
    assert drain(conn) == [TransmissionStarted("disk", EXPORT.transmission_flags)]


def test_go_for_unknown_export_is_err_unknown() -> None:
    conn = negotiating()
    replies = answer(conn, NbdOpt.NBD_OPT_GO, go_data(b"other"))
    assert [r[1] for r in replies] == [NbdRep.NBD_REP_ERR_UNKNOWN]
    assert b"other" in replies[0][2]
    assert conn.state is NbdState.OPTIONS


@pytest.mark.parametrize("no_zeroes", [True, False])
def test_export_name_replies_size_flags_and_maybe_zeroes(no_zeroes: bool) -> None:
    flags = NbdClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE
    if no_zeroes:
        flags |= NbdClientFlag.NBD_FLAG_C_NO_ZEROES
    conn = negotiating(flags=flags)
    conn.receive_data(option(NbdOpt.NBD_OPT_EXPORT_NAME, b"disk"))
    assert drain(conn) == [TransmissionStarted("disk", EXPORT.transmission_flags)]
    out = conn.data_to_send()
    assert struct.unpack_from(">QH", out) == (SIZE, EXPORT.transmission_flags)
    assert out[10:] == (b"" if no_zeroes else bytes(EXPORT_NAME_ZEROES))


def test_export_name_for_unknown_export_terminates() -> None:
    conn = negotiating()
    conn.receive_data(option(NbdOpt.NBD_OPT_EXPORT_NAME, b"nope"))
    with pytest.raises(NbdProtocolError, match="unknown export"):
        conn.next_event()


def test_abort_is_acked_then_soft_disconnect() -> None:
    conn = negotiating()
    conn.receive_data(option(NbdOpt.NBD_OPT_ABORT, b"ignored"))
    assert drain(conn) == [Disconnect("NBD_OPT_ABORT")]
    assert [r[1] for r in parse_option_replies(conn.data_to_send())] == [NbdRep.NBD_REP_ACK]
    assert conn.state is NbdState.CLOSED


def test_transmission_flags_follow_the_export() -> None:
    assert ExportInfo("", 1).transmission_flags == (
        TF.NBD_FLAG_HAS_FLAGS
        | TF.NBD_FLAG_SEND_FLUSH
        | TF.NBD_FLAG_SEND_FUA
        | TF.NBD_FLAG_SEND_TRIM
        | TF.NBD_FLAG_SEND_WRITE_ZEROES
        | TF.NBD_FLAG_CAN_MULTI_CONN
    )
    ro = ExportInfo("", 1, read_only=True).transmission_flags
    assert ro & TF.NBD_FLAG_READ_ONLY and not ro & TF.NBD_FLAG_SEND_TRIM
    assert not ExportInfo("", 1, can_trim=False).transmission_flags & TF.NBD_FLAG_SEND_TRIM


@pytest.mark.parametrize(
    "kwargs", [{"min_block": 3}, {"min_block": 1 << 17}, {"preferred_block": 256}, {"size": -1}]
)
def test_export_info_rejects_impossible_constraints(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ExportInfo(**{"name": "", "size": 4096, **kwargs})  # type: ignore[arg-type]
