"""Helpers for driving the sans-I/O NBD state machine by hand."""

from __future__ import annotations

import struct

from nbd_support import C_FLAGS, go_data, option

from xenvirtio.nbd.events import (
    NEED_DATA,
    ConnectionClosed,
    Disconnect,
    ExportInfo,
    TransmissionStarted,
)
from xenvirtio.nbd.protocol import NbdServerProtocol, NbdState
from xenvirtio.spec.nbd import (
    NBD_REP_MAGIC,
    OPTION_REPLY_HEADER,
    NbdCmd,
    NbdCmdFlag,
    NbdOpt,
)

SIZE = 1 << 20
EXPORT = ExportInfo(name="disk", size=SIZE, min_block=512, description="test disk")
CMD = NbdCmd
FLAG = NbdCmdFlag


def parse_option_replies(data: bytes) -> list[tuple[int, int, bytes]]:
    replies, pos = [], 0
    while pos < len(data):
        magic, opt, rep, length = OPTION_REPLY_HEADER.unpack_from(data, pos)
        assert magic == NBD_REP_MAGIC
        pos += OPTION_REPLY_HEADER.size
        replies.append((opt, rep, data[pos : pos + length]))
        pos += length
    assert pos == len(data)
    return replies


def drain(conn: NbdServerProtocol) -> list[object]:
    events: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, (Disconnect, ConnectionClosed)):
            break
    return events


def negotiating(export: ExportInfo = EXPORT, flags: int = C_FLAGS) -> NbdServerProtocol:
    conn = NbdServerProtocol(export)
    conn.data_to_send()
    conn.receive_data(struct.pack(">I", flags))
    assert conn.next_event() is NEED_DATA
    assert conn.state is NbdState.OPTIONS
    return conn


def transmitting(export: ExportInfo = EXPORT) -> NbdServerProtocol:
    conn = negotiating(export)
    conn.receive_data(option(NbdOpt.NBD_OPT_GO, go_data()))
    assert isinstance(conn.next_event(), TransmissionStarted)
    conn.data_to_send()
    return conn


def answer(conn: NbdServerProtocol, opt: int, data: bytes = b"") -> list[tuple[int, int, bytes]]:
    conn.receive_data(option(opt, data))
    assert drain(conn) == []
    return parse_option_replies(conn.data_to_send())
