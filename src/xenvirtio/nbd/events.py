"""What the NBD server state machine hands out and takes in: export description, events, replies.

Events are frozen dataclasses, as in h11. The call order of a connection is

    data_to_send  (receive_data  next_event*  data_to_send  send*)*

where ``next_event`` yields :class:`TransmissionStarted` once, then :class:`Request` and
:class:`RequestRejected` (each answered exactly once with ``send(Reply(...))``), and ends with
:class:`Disconnect` or :class:`ConnectionClosed`, or raises :class:`NbdProtocolError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from xenvirtio.spec.nbd import (
    NBD_DEFAULT_PREFERRED_BLOCK,
    NBD_MAX_MIN_BLOCK,
    NBD_MAX_PAYLOAD,
    NBD_MAX_STRING,
    NbdCmd,
    NbdCmdFlag,
    NbdError,
)
from xenvirtio.spec.nbd import NbdTransmissionFlag as TF

_U64_MAX = (1 << 64) - 1


class NbdProtocolError(Exception):
    """The client broke a MUST of the protocol: the connection must be closed (hard disconnect).

    Only that one connection is affected; the state machine latches in ``ERROR``.
    """


class LocalProtocolError(Exception):
    """The server side misused the state machine (a reply for a handle not in flight...)."""


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class ExportInfo:
    """Everything the handshake tells a client about the one export a server offers.

    ``min_block`` is the smallest addressable unit (proto.md Size constraints): requests not
    aligned to it are answered with NBD_EINVAL.
    """

    name: str
    size: int
    read_only: bool = False
    can_trim: bool = True
    can_write_zeroes: bool = True
    min_block: int = 1
    preferred_block: int = NBD_DEFAULT_PREFERRED_BLOCK
    max_payload: int = NBD_MAX_PAYLOAD
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.size <= _U64_MAX:
            raise ValueError(f"export size {self.size} is not a u64")
        for text in (self.name, self.description):
            if "\0" in text or len(text.encode()) > NBD_MAX_STRING:
                raise ValueError("NBD strings hold no NUL and at most 4096 bytes")
        # proto.md Size constraints: min a power of 2 <= 64 KiB; preferred a power of 2
        # >= max(min, 512); maximum payload >= preferred.
        if not _is_power_of_two(self.min_block) or self.min_block > NBD_MAX_MIN_BLOCK:
            raise ValueError(f"minimum block size {self.min_block} is not a power of 2 <= 64K")
        if not _is_power_of_two(self.preferred_block) or self.preferred_block < max(
            self.min_block, 512
        ):
            raise ValueError(f"preferred block size {self.preferred_block} is not valid")
        if not self.preferred_block <= self.max_payload <= NBD_MAX_PAYLOAD:
            raise ValueError(f"maximum payload {self.max_payload} is not valid")

    @property
    def transmission_flags(self) -> TF:
        """The flags sent with the size. CAN_MULTI_CONN: the server keeps no cache of its
        own and every connection shares one backend, so a FLUSH covers all of them."""
        flags = TF.NBD_FLAG_HAS_FLAGS | TF.NBD_FLAG_SEND_FLUSH | TF.NBD_FLAG_SEND_FUA
        flags |= TF.NBD_FLAG_CAN_MULTI_CONN
        if self.read_only:
            return flags | TF.NBD_FLAG_READ_ONLY
        if self.can_trim:
            flags |= TF.NBD_FLAG_SEND_TRIM
        if self.can_write_zeroes:
            flags |= TF.NBD_FLAG_SEND_WRITE_ZEROES
        return flags


class NeedData(enum.Enum):
    """Returned by ``next_event`` when the buffered bytes hold no complete message."""

    NEED_DATA = enum.auto()


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True)
class TransmissionStarted:
    """Option haggling ended with NBD_OPT_GO or NBD_OPT_EXPORT_NAME: requests follow."""

    export_name: str
    flags: TF


@dataclass(frozen=True)
class Request:
    """A validated request: in bounds, aligned, allowed on this export. ``data`` is a copy of
    the NBD_CMD_WRITE payload (empty for every other command)."""

    command: NbdCmd
    handle: int
    offset: int
    length: int
    flags: NbdCmdFlag
    data: bytes = b""

    @property
    def fua(self) -> bool:
        return bool(self.flags & NbdCmdFlag.NBD_CMD_FLAG_FUA)

    @property
    def no_hole(self) -> bool:
        return bool(self.flags & NbdCmdFlag.NBD_CMD_FLAG_NO_HOLE)


@dataclass(frozen=True)
class RequestRejected:
    """A well-framed request that must be answered with ``error`` (any payload was skipped)."""

    handle: int
    command: int
    error: NbdError
    reason: str


@dataclass(frozen=True)
class Disconnect:
    """Soft disconnect (NBD_CMD_DISC or NBD_OPT_ABORT): finish what is in flight, then close."""

    reason: str


@dataclass(frozen=True)
class ConnectionClosed:
    """The client closed its end between two messages (a hard disconnect)."""


Event = TransmissionStarted | Request | RequestRejected | Disconnect | ConnectionClosed


@dataclass(frozen=True)
class Reply:
    """The server's answer to one :class:`Request` or :class:`RequestRejected`.

    ``data`` is the NBD_CMD_READ payload on success and must be exactly the requested length.
    """

    handle: int
    error: NbdError | None = None
    data: bytes | bytearray | memoryview = b""
