"""NBD protocol constants, from the NBD protocol document (NetworkBlockDevice/nbd doc/proto.md).

Nothing here does anything: names and numbers only, so code can be held beside the document.
Section names in comments ("proto.md Size constraints") point into that document.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Final

# --- Magic numbers (proto.md Handshake, Transmission) ---
NBDMAGIC: Final = 0x4E42444D41474943  # "NBDMAGIC", a.k.a. INIT_PASSWD
IHAVEOPT: Final = 0x49484156454F5054  # "IHAVEOPT": newstyle magic, also opens every option
NBD_REP_MAGIC: Final = 0x0003E889045565A9  # opens every option reply
NBD_REQUEST_MAGIC: Final = 0x25609513
NBD_SIMPLE_REPLY_MAGIC: Final = 0x67446698
NBD_STRUCTURED_REPLY_MAGIC: Final = 0x668E33EF

# --- Wire layouts (all big-endian, "network byte order") ---
# S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags.
HANDSHAKE: Final = struct.Struct(">QQH")
# C: 32-bit client flags.
CLIENT_FLAGS: Final = struct.Struct(">I")
# C: IHAVEOPT, 32-bit option, 32-bit length of option data.
OPTION_HEADER: Final = struct.Struct(">QII")
# S: NBD_REP_MAGIC, 32-bit option, 32-bit reply type, 32-bit length of reply data.
OPTION_REPLY_HEADER: Final = struct.Struct(">QIII")
# S (NBD_OPT_EXPORT_NAME reply): 64-bit export size, 16-bit transmission flags.
EXPORT_NAME_REPLY: Final = struct.Struct(">QH")
EXPORT_NAME_ZEROES: Final = 124  # reserved zeroes, unless NBD_FLAG_C_NO_ZEROES
# C: magic, 16-bit command flags, 16-bit type, 64-bit handle, 64-bit offset, 32-bit length.
REQUEST: Final = struct.Struct(">IHHQQI")
# S: magic, 32-bit error, 64-bit handle.
SIMPLE_REPLY: Final = struct.Struct(">IIQ")
# NBD_REP_INFO payloads: 16-bit type then the item.
INFO_EXPORT: Final = struct.Struct(">HQH")  # type, size, transmission flags
INFO_BLOCK_SIZE: Final = struct.Struct(">HIII")  # type, minimum, preferred, maximum payload


class NbdHandshakeFlag(IntFlag):
    """16-bit handshake flags, sent by the server after IHAVEOPT (proto.md Handshake flags)."""

    NBD_FLAG_FIXED_NEWSTYLE = 1 << 0
    NBD_FLAG_NO_ZEROES = 1 << 1


class NbdClientFlag(IntFlag):
    """32-bit client flags; any other bit set MUST make the server drop the connection."""

    NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0
    NBD_FLAG_C_NO_ZEROES = 1 << 1


class NbdTransmissionFlag(IntFlag):
    """16-bit transmission flags, sent with the export size (proto.md Transmission flags)."""

    NBD_FLAG_HAS_FLAGS = 1 << 0
    NBD_FLAG_READ_ONLY = 1 << 1
    NBD_FLAG_SEND_FLUSH = 1 << 2
    NBD_FLAG_SEND_FUA = 1 << 3
    NBD_FLAG_ROTATIONAL = 1 << 4
    NBD_FLAG_SEND_TRIM = 1 << 5
    NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6
    NBD_FLAG_SEND_DF = 1 << 7
    NBD_FLAG_CAN_MULTI_CONN = 1 << 8
    NBD_FLAG_SEND_RESIZE = 1 << 9
    NBD_FLAG_SEND_CACHE = 1 << 10
    NBD_FLAG_SEND_FAST_ZERO = 1 << 11
    NBD_FLAG_BLOCK_STATUS_PAYLOAD = 1 << 12


class NbdOpt(IntEnum):
    """Option types used during option haggling (proto.md Option types)."""

    NBD_OPT_EXPORT_NAME = 1
    NBD_OPT_ABORT = 2
    NBD_OPT_LIST = 3
    NBD_OPT_PEEK_EXPORT = 4  # withdrawn
    NBD_OPT_STARTTLS = 5
    NBD_OPT_INFO = 6
    NBD_OPT_GO = 7
    NBD_OPT_STRUCTURED_REPLY = 8
    NBD_OPT_LIST_META_CONTEXT = 9
    NBD_OPT_SET_META_CONTEXT = 10
    NBD_OPT_EXTENDED_HEADERS = 11


_REP_ERR: Final = 1 << 31  # every error reply type has bit 31 set


class NbdRep(IntEnum):
    """Option reply types (proto.md Option reply types)."""

    NBD_REP_ACK = 1
    NBD_REP_SERVER = 2
    NBD_REP_INFO = 3
    NBD_REP_META_CONTEXT = 4
    NBD_REP_ERR_UNSUP = _REP_ERR + 1
    NBD_REP_ERR_POLICY = _REP_ERR + 2
    NBD_REP_ERR_INVALID = _REP_ERR + 3
    NBD_REP_ERR_PLATFORM = _REP_ERR + 4
    NBD_REP_ERR_TLS_REQD = _REP_ERR + 5
    NBD_REP_ERR_UNKNOWN = _REP_ERR + 6
    NBD_REP_ERR_SHUTDOWN = _REP_ERR + 7
    NBD_REP_ERR_BLOCK_SIZE_REQD = _REP_ERR + 8
    NBD_REP_ERR_TOO_BIG = _REP_ERR + 9
    NBD_REP_ERR_EXT_HEADER_REQD = _REP_ERR + 10


class NbdInfo(IntEnum):
    """Information types carried by NBD_REP_INFO (proto.md NBD_REP_INFO)."""

    NBD_INFO_EXPORT = 0
    NBD_INFO_NAME = 1
    NBD_INFO_DESCRIPTION = 2
    NBD_INFO_BLOCK_SIZE = 3


class NbdCmd(IntEnum):
    """Request types of the transmission phase (proto.md Request types)."""

    NBD_CMD_READ = 0
    NBD_CMD_WRITE = 1
    NBD_CMD_DISC = 2
    NBD_CMD_FLUSH = 3
    NBD_CMD_TRIM = 4
    NBD_CMD_CACHE = 5
    NBD_CMD_WRITE_ZEROES = 6
    NBD_CMD_BLOCK_STATUS = 7
    NBD_CMD_RESIZE = 8


class NbdCmdFlag(IntFlag):
    """16-bit command flags of a request (proto.md Command flags)."""

    NBD_CMD_FLAG_FUA = 1 << 0
    NBD_CMD_FLAG_NO_HOLE = 1 << 1
    NBD_CMD_FLAG_DF = 1 << 2
    NBD_CMD_FLAG_REQ_ONE = 1 << 3
    NBD_CMD_FLAG_FAST_ZERO = 1 << 4
    NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5


class NbdError(IntEnum):
    """The only values the error field of a reply may carry (proto.md Error values)."""

    NBD_EPERM = 1
    NBD_EIO = 5
    NBD_ENOMEM = 12
    NBD_EINVAL = 22
    NBD_ENOSPC = 28
    NBD_EOVERFLOW = 75
    NBD_ENOTSUP = 95
    NBD_ESHUTDOWN = 108


# --- Limits ---
# proto.md Conventions: a string MUST be no longer than 4096 bytes.
NBD_MAX_STRING: Final = 4096
# proto.md Size constraints: the defaults a server SHOULD support when none are advertised,
# and the payload size no peer may treat as a denial of service.
NBD_DEFAULT_MIN_BLOCK: Final = 1
NBD_DEFAULT_PREFERRED_BLOCK: Final = 4096
NBD_MAX_PAYLOAD: Final = 1 << 25
# proto.md Size constraints: an advertised minimum block size MUST be a power of 2 <= 64 KiB.
NBD_MAX_MIN_BLOCK: Final = 1 << 16
# NBD_OPT_INFO/GO option data: 32-bit name length, name, 16-bit count of info requests.
NBD_INFO_REQUEST_FIXED: Final = 6
