"""Option haggling codec: parse option data, encode option replies. Pure functions, no state.

Every function here takes client bytes that have already been copied out of the stream and
bounded by the caller; none of them trusts a length field it has not checked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xenvirtio.nbd.events import ExportInfo
from xenvirtio.spec.nbd import (
    EXPORT_NAME_REPLY,
    EXPORT_NAME_ZEROES,
    INFO_BLOCK_SIZE,
    INFO_EXPORT,
    NBD_INFO_REQUEST_FIXED,
    NBD_MAX_STRING,
    NBD_REP_MAGIC,
    OPTION_REPLY_HEADER,
    NbdInfo,
    NbdRep,
)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def option_reply(option: int, reply: NbdRep, data: bytes = b"") -> bytes:
    """One fixed-newstyle option reply: header, then ``data`` (proto.md Fixed newstyle)."""
    return OPTION_REPLY_HEADER.pack(NBD_REP_MAGIC, option, reply, len(data)) + data


def error_reply(option: int, reply: NbdRep, message: str) -> bytes:
    """An error reply; its data is a message for a human (proto.md Option reply types)."""
    assert reply >= NbdRep.NBD_REP_ERR_UNSUP
    return option_reply(option, reply, message.encode()[:NBD_MAX_STRING])


def decode_name(raw: bytes) -> str | None:
    """An export name as a str, or None when it is not a valid NBD string (proto.md
    Conventions: UTF-8, no NUL, at most 4096 bytes)."""
    if len(raw) > NBD_MAX_STRING or b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def matches(export: ExportInfo, name: str) -> bool:
    """The empty name selects the default export, which is the only one (proto.md
    NBD_OPT_EXPORT_NAME)."""
    return name in ("", export.name)


def export_name_reply(export: ExportInfo, no_zeroes: bool) -> bytes:
    """The answer to NBD_OPT_EXPORT_NAME: size, flags, and 124 zeroes unless
    NBD_FLAG_C_NO_ZEROES was negotiated."""
    reply = EXPORT_NAME_REPLY.pack(export.size, export.transmission_flags)
    return reply if no_zeroes else reply + bytes(EXPORT_NAME_ZEROES)


def list_replies(option: int, export: ExportInfo) -> bytes:
    """NBD_OPT_LIST: one NBD_REP_SERVER (name length, name, description), then NBD_REP_ACK."""
    name = export.name.encode()
    server = _U32.pack(len(name)) + name + export.description.encode()
    return option_reply(option, NbdRep.NBD_REP_SERVER, server) + option_reply(
        option, NbdRep.NBD_REP_ACK
    )


@dataclass(frozen=True)
class InfoRequest:
    """The data of NBD_OPT_INFO / NBD_OPT_GO: an export name and the NBD_INFO_* asked for."""

    name: str
    requests: tuple[int, ...]


def parse_info_request(data: bytes) -> InfoRequest | str:
    """Parse NBD_OPT_INFO/GO data; a str is the reason it is NBD_REP_ERR_INVALID.

    Layout (proto.md NBD_OPT_INFO): 32-bit name length (MUST be <= option length - 6), name,
    16-bit number of information requests, 16 bits each.
    """
    if len(data) < NBD_INFO_REQUEST_FIXED:
        return f"option data of {len(data)} bytes is shorter than 6"
    (name_len,) = _U32.unpack_from(data, 0)
    if name_len > len(data) - NBD_INFO_REQUEST_FIXED:
        return f"name length {name_len} overruns the option data"
    name = decode_name(data[4 : 4 + name_len])
    if name is None:
        return "export name is not a valid NBD string"
    (count,) = _U16.unpack_from(data, 4 + name_len)
    rest = data[4 + name_len + 2 :]
    if len(rest) != 2 * count:
        return f"{count} information requests do not fill {len(rest)} bytes"
    requests = tuple(_U16.unpack_from(rest, 2 * i)[0] for i in range(count))
    return InfoRequest(name, requests)


def info_replies(option: int, export: ExportInfo, requests: tuple[int, ...]) -> bytes:
    """NBD_REP_INFO items, then NBD_REP_ACK.

    NBD_INFO_EXPORT is mandatory; NBD_INFO_BLOCK_SIZE is always sent too (a server MAY send
    items not asked for, and clients that do not know it ignore it). NAME and DESCRIPTION
    are sent when asked for. Unknown requests are ignored, as the server MUST.
    """
    items = [
        INFO_EXPORT.pack(NbdInfo.NBD_INFO_EXPORT, export.size, export.transmission_flags),
        INFO_BLOCK_SIZE.pack(
            NbdInfo.NBD_INFO_BLOCK_SIZE,
            export.min_block,
            export.preferred_block,
            export.max_payload,
        ),
    ]
    if NbdInfo.NBD_INFO_NAME in requests:
        items.append(_U16.pack(NbdInfo.NBD_INFO_NAME) + export.name.encode())
    if NbdInfo.NBD_INFO_DESCRIPTION in requests and export.description:
        items.append(_U16.pack(NbdInfo.NBD_INFO_DESCRIPTION) + export.description.encode())
    out = b"".join(option_reply(option, NbdRep.NBD_REP_INFO, item) for item in items)
    return out + option_reply(option, NbdRep.NBD_REP_ACK)
