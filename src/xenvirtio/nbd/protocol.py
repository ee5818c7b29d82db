"""The NBD server side as a sans-I/O state machine: bytes in, events and bytes out.

It speaks fixed newstyle negotiation and simple replies (proto.md). Option haggling is
answered here, since the answers follow from the :class:`ExportInfo` alone; requests come out
as events for the caller to execute, and their replies go back in through :meth:`send`.
See :mod:`xenvirtio.nbd.events` for the call order.

The client is hostile. Every length is checked against a bound before bytes are buffered for
it, payloads are copied out of the stream before they are handed on, and a broken MUST raises
:class:`NbdProtocolError`, after which the state machine stays in ``ERROR``.
"""

from __future__ import annotations

import enum
import errno
from typing import Final

from xenvirtio.nbd import options
from xenvirtio.nbd.events import (
    NEED_DATA,
    ConnectionClosed,
    Disconnect,
    Event,
    ExportInfo,
    LocalProtocolError,
    NbdProtocolError,
    NeedData,
    Reply,
    Request,
    RequestRejected,
    TransmissionStarted,
)
from xenvirtio.spec.nbd import (
    CLIENT_FLAGS,
    HANDSHAKE,
    IHAVEOPT,
    NBD_MAX_STRING,
    NBD_REQUEST_MAGIC,
    NBD_SIMPLE_REPLY_MAGIC,
    NBDMAGIC,
    OPTION_HEADER,
    REQUEST,
    SIMPLE_REPLY,
    NbdClientFlag,
    NbdCmd,
    NbdCmdFlag,
    NbdError,
    NbdHandshakeFlag,
    NbdOpt,
    NbdRep,
)

# Option data we are willing to buffer: NBD_OPT_GO with a 4096-byte name and a few thousand
# information requests fits. Longer is a denial of service (proto.md "Termination of the
# session during option haggling" lets the server hard-disconnect then).
MAX_OPTION_DATA: Final = 16 * 1024


class NbdState(enum.Enum):
    AWAIT_CLIENT_FLAGS = enum.auto()
    OPTIONS = enum.auto()
    TRANSMISSION = enum.auto()
    CLOSED = enum.auto()
    ERROR = enum.auto()


class _Input(enum.Enum):
    CLIENT_FLAGS = enum.auto()
    OPTION = enum.auto()  # an option answered without leaving haggling
    GO = enum.auto()  # NBD_OPT_GO accepted, or NBD_OPT_EXPORT_NAME
    ABORT = enum.auto()
    REQUEST = enum.auto()
    DISC = enum.auto()
    EOF = enum.auto()


_S, _I = NbdState, _Input
# Every legal (state, input) pair; any other pair latches ERROR.
TRANSITIONS: Final[dict[tuple[NbdState, _Input], NbdState]] = {
    (_S.AWAIT_CLIENT_FLAGS, _I.CLIENT_FLAGS): _S.OPTIONS,
    (_S.AWAIT_CLIENT_FLAGS, _I.EOF): _S.CLOSED,
    (_S.OPTIONS, _I.OPTION): _S.OPTIONS,
    (_S.OPTIONS, _I.GO): _S.TRANSMISSION,
    (_S.OPTIONS, _I.ABORT): _S.CLOSED,
    (_S.OPTIONS, _I.EOF): _S.CLOSED,
    (_S.TRANSMISSION, _I.REQUEST): _S.TRANSMISSION,
    (_S.TRANSMISSION, _I.DISC): _S.CLOSED,
    (_S.TRANSMISSION, _I.EOF): _S.CLOSED,
}

_F = NbdCmdFlag
# proto.md Command flags: FUA is valid on every command once NBD_FLAG_SEND_FUA is advertised
# (always, here); NO_HOLE only on WRITE_ZEROES. DF, REQ_ONE, FAST_ZERO are never advertised.
_ALLOWED_FLAGS: Final[dict[int, NbdCmdFlag]] = {
    NbdCmd.NBD_CMD_READ: _F.NBD_CMD_FLAG_FUA,
    NbdCmd.NBD_CMD_WRITE: _F.NBD_CMD_FLAG_FUA,
    NbdCmd.NBD_CMD_DISC: _F.NBD_CMD_FLAG_FUA,
    NbdCmd.NBD_CMD_FLUSH: _F.NBD_CMD_FLAG_FUA,
    NbdCmd.NBD_CMD_TRIM: _F.NBD_CMD_FLAG_FUA,
    NbdCmd.NBD_CMD_WRITE_ZEROES: _F.NBD_CMD_FLAG_FUA | _F.NBD_CMD_FLAG_NO_HOLE,
}
_WRITES: Final = frozenset({NbdCmd.NBD_CMD_WRITE, NbdCmd.NBD_CMD_TRIM, NbdCmd.NBD_CMD_WRITE_ZEROES})

# Enum lookups by value, without EnumType.__call__ on every request.
_COMMANDS: Final[dict[int, NbdCmd]] = {int(cmd): cmd for cmd in NbdCmd}
_FLAG_VALUES: Final[dict[int, NbdCmdFlag]] = {v: NbdCmdFlag(v) for v in range(4)}


def _flags(value: int) -> NbdCmdFlag:
    flags = _FLAG_VALUES.get(value)
    return NbdCmdFlag(value) if flags is None else flags


_ERRNO_TO_NBD: Final[dict[int, NbdError]] = {
    errno.EPERM: NbdError.NBD_EPERM,
    errno.EROFS: NbdError.NBD_EPERM,
    errno.EACCES: NbdError.NBD_EPERM,
    errno.EIO: NbdError.NBD_EIO,
    errno.ENOMEM: NbdError.NBD_ENOMEM,
    errno.EINVAL: NbdError.NBD_EINVAL,
    # proto.md Error values: map EDQUOT and EFBIG to ENOSPC.
    errno.ENOSPC: NbdError.NBD_ENOSPC,
    errno.EDQUOT: NbdError.NBD_ENOSPC,
    errno.EFBIG: NbdError.NBD_ENOSPC,
    errno.EOVERFLOW: NbdError.NBD_EOVERFLOW,
    errno.ESHUTDOWN: NbdError.NBD_ESHUTDOWN,
}


def nbd_error(errno_value: int) -> NbdError:
    """The NBD error value for a host errno; anything without a counterpart is NBD_EIO."""
    return _ERRNO_TO_NBD.get(errno_value, NbdError.NBD_EIO)


class NbdServerProtocol:
    """One server connection. See :mod:`xenvirtio.nbd.events` for the call order."""

    def __init__(self, export: ExportInfo) -> None:
        self.export = export
        self.state = NbdState.AWAIT_CLIENT_FLAGS
        self._buf = bytearray()
        self._eof = False
        self._no_zeroes = False
        self._error: NbdProtocolError | None = None
        self._skip = 0  # payload bytes of a rejected NBD_CMD_WRITE still to discard
        self._rejected: RequestRejected | None = None  # reported once the skip is done
        # handle -> reply payload length of each request in flight under that handle.
        self._in_flight: dict[int, list[int]] = {}
        self._in_flight_count = 0
        flags = NbdHandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE | NbdHandshakeFlag.NBD_FLAG_NO_ZEROES
        self._out = bytearray(HANDSHAKE.pack(NBDMAGIC, IHAVEOPT, flags))

    # --- bytes in, bytes out ---

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the client; ``b""`` means the client closed its end."""
        if self.state is NbdState.CLOSED:
            return  # a client MUST NOT send after NBD_CMD_DISC: drop it
        if self._eof:
            raise LocalProtocolError("receive_data after end of stream")
        if data:
            self._buf += data
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        """Bytes the state machine produced on its own (greeting, option replies)."""
        if not self._out:
            return b""
        out, self._out = bytes(self._out), bytearray()
        return out

    @property
    def in_flight(self) -> int:
        """Requests handed out by :meth:`next_event` and not yet answered by :meth:`send`."""
        return self._in_flight_count

    def send(self, reply: Reply) -> bytes:
        """Encode the simple reply to a request in flight (replies may come in any order)."""
        size = memoryview(reply.data).nbytes
        header = self.reply_header(reply.handle, reply.error, size)
        return b"".join((header, reply.data)) if size else header

    def reply_header(self, handle: int, error: NbdError | None, size: int) -> bytes:
        """Like :meth:`send`, but only the 16-byte header of a reply that carries ``size``
        bytes of data: the caller sends the data after it (no copy of a large read)."""
        pending = self._in_flight.get(handle)
        if not pending:
            raise LocalProtocolError(f"no request in flight with handle {handle:#x}")
        if error is not None:
            if size:
                raise LocalProtocolError("an error reply carries no data")
            pending.pop(0)
        elif size in pending:
            pending.remove(size)
        else:
            raise LocalProtocolError(f"reply of {size} bytes matches no request in flight")
        if not pending:
            del self._in_flight[handle]
        self._in_flight_count -= 1
        return SIMPLE_REPLY.pack(NBD_SIMPLE_REPLY_MAGIC, error or 0, handle)

    # --- events ---

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Raises NbdProtocolError when the client broke the
        protocol; the connection must then be closed."""
        if self._error is not None:
            raise self._error
        if self.state is NbdState.CLOSED:
            return ConnectionClosed()
        try:
            return self._step()
        except NbdProtocolError as exc:
            self.state, self._error = NbdState.ERROR, exc
            raise

    def _step(self) -> Event | NeedData:
        while True:
            event: Event | NeedData | None
            if self.state is NbdState.AWAIT_CLIENT_FLAGS:
                event = self._client_flags()
            elif self.state is NbdState.OPTIONS:
                event = self._option()
            else:
                event = self._request()
            if event is NEED_DATA and self._eof:
                self._transition(_Input.EOF)  # between messages: _available saw no partial one
                return ConnectionClosed()
            if event is not None:
                return event

    def _transition(self, inp: _Input) -> None:
        following = TRANSITIONS.get((self.state, inp))
        if following is None:
            raise NbdProtocolError(f"{inp.name} is not valid in state {self.state.name}")
        self.state = following

    def _available(self, size: int) -> bool:
        """Whether ``size`` bytes are buffered; end of stream inside a message is an error."""
        if len(self._buf) >= size:
            return True
        if self._eof and self._buf:
            raise NbdProtocolError(f"connection closed {len(self._buf)} bytes into a message")
        return False

    def _take(self, size: int) -> bytes:
        """Copy ``size`` bytes out of the stream (one copy: no intermediate slice)."""
        with memoryview(self._buf) as view:
            data = bytes(view[:size])
        del self._buf[:size]
        return data

    # --- handshake and option haggling ---

    def _client_flags(self) -> NeedData | None:
        if not self._available(CLIENT_FLAGS.size):
            return NEED_DATA
        (flags,) = CLIENT_FLAGS.unpack(self._take(CLIENT_FLAGS.size))
        known = NbdClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | NbdClientFlag.NBD_FLAG_C_NO_ZEROES
        if flags & ~int(known):  # int: ~ of an IntFlag keeps only its own bits
            # proto.md Client flags: the server MUST drop the connection on unknown flags.
            raise NbdProtocolError(f"unknown client flags {flags:#x}")
        self._no_zeroes = bool(flags & NbdClientFlag.NBD_FLAG_C_NO_ZEROES)
        self._transition(_Input.CLIENT_FLAGS)
        return None

    def _option(self) -> Event | NeedData | None:
        if not self._available(OPTION_HEADER.size):
            return NEED_DATA
        magic, option, length = OPTION_HEADER.unpack_from(self._buf)
        if magic != IHAVEOPT:
            raise NbdProtocolError(f"option magic {magic:#x} is not IHAVEOPT")
        if length > MAX_OPTION_DATA:
            raise NbdProtocolError(f"option {option} with {length} bytes of data")
        if not self._available(OPTION_HEADER.size + length):
            return NEED_DATA
        del self._buf[: OPTION_HEADER.size]
        return self._handle_option(option, self._take(length))

    def _handle_option(self, option: int, data: bytes) -> Event | None:
        if option == NbdOpt.NBD_OPT_EXPORT_NAME:
            return self._export_name(data)
        if option == NbdOpt.NBD_OPT_ABORT:
            # proto.md NBD_OPT_ABORT: reply ACK, ignore any data.
            self._out += options.option_reply(option, NbdRep.NBD_REP_ACK)
            self._transition(_Input.ABORT)
            return Disconnect("NBD_OPT_ABORT")
        if option in (NbdOpt.NBD_OPT_INFO, NbdOpt.NBD_OPT_GO):
            return self._info(option, data)
        if option == NbdOpt.NBD_OPT_LIST and not data:
            self._out += options.list_replies(option, self.export)
        elif option == NbdOpt.NBD_OPT_LIST:
            # proto.md NBD_OPT_LIST: data SHOULD be rejected with NBD_REP_ERR_INVALID.
            self._out += options.error_reply(option, NbdRep.NBD_REP_ERR_INVALID, "unexpected data")
        else:
            # Unknown options, STARTTLS (no TLS), STRUCTURED_REPLY (simple replies only),
            # meta contexts and extended headers.
            message = f"option {option} is not supported"
            self._out += options.error_reply(option, NbdRep.NBD_REP_ERR_UNSUP, message)
        self._transition(_Input.OPTION)
        return None

    def _export_name(self, data: bytes) -> TransmissionStarted:
        name = options.decode_name(data)
        if name is None or not options.matches(self.export, name):
            # proto.md NBD_OPT_EXPORT_NAME: cannot return an error; MUST terminate the session.
            raise NbdProtocolError(f"NBD_OPT_EXPORT_NAME for unknown export {data[:64]!r}")
        self._out += options.export_name_reply(self.export, self._no_zeroes)
        self._transition(_Input.GO)
        return TransmissionStarted(name, self.export.transmission_flags)

    def _info(self, option: int, data: bytes) -> TransmissionStarted | None:
        parsed = options.parse_info_request(data)
        if isinstance(parsed, str):
            self._out += options.error_reply(option, NbdRep.NBD_REP_ERR_INVALID, parsed)
        elif not options.matches(self.export, parsed.name):
            message = f"no export named {parsed.name[: NBD_MAX_STRING // 8]!r}"
            self._out += options.error_reply(option, NbdRep.NBD_REP_ERR_UNKNOWN, message)
        else:
            self._out += options.info_replies(option, self.export, parsed.requests)
            if option == NbdOpt.NBD_OPT_GO:
                self._transition(_Input.GO)
                return TransmissionStarted(parsed.name, self.export.transmission_flags)
        self._transition(_Input.OPTION)
        return None

    # --- transmission ---

    def _request(self) -> Event | NeedData:
        if self._skip:
            return self._discard()
        if not self._available(REQUEST.size):
            return NEED_DATA
        magic, flags, command, handle, offset, length = REQUEST.unpack_from(self._buf)
        if magic != NBD_REQUEST_MAGIC:
            raise NbdProtocolError(f"request magic {magic:#x} is not NBD_REQUEST_MAGIC")
        if command == NbdCmd.NBD_CMD_WRITE and length > self.export.max_payload:
            # proto.md Size constraints: a payload this large may be treated as a denial of
            # service; skipping it would let one client stream gigabytes at us.
            raise NbdProtocolError(f"NBD_CMD_WRITE of {length} bytes exceeds the maximum payload")
        if command == NbdCmd.NBD_CMD_DISC:
            del self._buf[: REQUEST.size]
            self._transition(_Input.DISC)
            return Disconnect("NBD_CMD_DISC")
        payload = length if command == NbdCmd.NBD_CMD_WRITE else 0
        rejection = self._validate(command, flags, offset, length)
        if rejection is not None:
            del self._buf[: REQUEST.size]
            error, reason = rejection
            self._rejected = RequestRejected(handle, command, error, reason)
            self._skip = payload
            return self._discard()
        if not self._available(REQUEST.size + payload):
            return NEED_DATA
        del self._buf[: REQUEST.size]
        data = self._take(payload) if payload else b""
        self._track(handle, length if command == NbdCmd.NBD_CMD_READ else 0)
        self._transition(_Input.REQUEST)
        return Request(_COMMANDS[command], handle, offset, length, _flags(flags), data)

    def _discard(self) -> RequestRejected | NeedData:
        """Drop the payload of a rejected write without buffering it, then report it."""
        dropped = min(self._skip, len(self._buf))
        del self._buf[:dropped]
        self._skip -= dropped
        if self._skip:
            if self._eof:
                raise NbdProtocolError(f"connection closed {self._skip} bytes short of a write")
            return NEED_DATA
        rejected, self._rejected = self._rejected, None
        assert rejected is not None
        self._track(rejected.handle, 0)
        self._transition(_Input.REQUEST)
        return rejected

    def _track(self, handle: int, reply_size: int) -> None:
        self._in_flight.setdefault(handle, []).append(reply_size)
        self._in_flight_count += 1

    def _validate(
        self, command: int, flags: int, offset: int, length: int
    ) -> tuple[NbdError, str] | None:
        """Why a request must be answered with an error, or None (proto.md Error values)."""
        export = self.export
        allowed = _ALLOWED_FLAGS.get(command)
        if allowed is None:
            return NbdError.NBD_EINVAL, f"command {command} is not supported"
        if flags & ~int(allowed):
            return NbdError.NBD_EINVAL, f"flags {flags:#x} are not valid for command {command}"
        if export.read_only and command in _WRITES:
            return NbdError.NBD_EPERM, "the export is read-only"
        if (command == NbdCmd.NBD_CMD_TRIM and not export.can_trim) or (
            command == NbdCmd.NBD_CMD_WRITE_ZEROES and not export.can_write_zeroes
        ):
            return NbdError.NBD_EINVAL, f"command {command} was not advertised"
        if command == NbdCmd.NBD_CMD_FLUSH:
            return None  # offset and length are reserved
        if command == NbdCmd.NBD_CMD_READ and length > export.max_payload:
            return NbdError.NBD_EOVERFLOW, f"read of {length} bytes exceeds the maximum payload"
        if offset + length > export.size:
            # ENOSPC for writes beyond the end, EINVAL for reads and trims.
            past_end = command in (NbdCmd.NBD_CMD_WRITE, NbdCmd.NBD_CMD_WRITE_ZEROES)
            error = NbdError.NBD_ENOSPC if past_end else NbdError.NBD_EINVAL
            return error, f"{offset:#x}+{length:#x} is beyond the export size {export.size:#x}"
        if (offset | length) & (export.min_block - 1):
            return NbdError.NBD_EINVAL, f"not aligned to {export.min_block} bytes"
        return None
