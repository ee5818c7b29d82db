"""The XenStore client protocol, sans-I/O: requests to bytes, bytes to replies and events.

Shared by the blocking client (:mod:`xenvirtio.xenstore.client`) and the asyncio client
(:mod:`xenvirtio.xenstore.aio`). Each operation is a :class:`Request` carrying its
message type, payload and the function that decodes a successful reply, so both clients
are thin: they move bytes and wait.

:class:`ClientProtocol` is one connection's state: request ids (allocated per connection,
never one in flight twice), the matching of replies to requests, and the demultiplexing
of XS_WATCH_EVENT messages, which may arrive between any two replies.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XsdSockmsgType
from xenvirtio.xenstore.perms import Perm, format_perms, parse_perms
from xenvirtio.xenstore.wire import HEADER, Packet, PacketDecoder, XsError

T = TypeVar("T")
XS = XsdSockmsgType
_U32_MAX = 0xFFFF_FFFF


class XenstoreError(OSError):
    """The daemon answered XS_ERROR; ``name`` is the xsd_errors name (``"ENOENT"``)."""

    def __init__(self, name: str, detail: str = "") -> None:
        code = XSD_ERRORS.get(name, _errno.EIO)
        super().__init__(code, f"{name}{': ' + detail if detail else ''}")
        self.name = name


class ProtocolError(Exception):
    """The daemon sent something a XenStore daemon never sends; the connection is unusable."""


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """One operation: what to send and how to read a successful reply."""

    type: int
    payload: bytes
    decode: Callable[[bytes], T]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """An XS_WATCH_EVENT: ``path`` changed, for the watch registered with ``token``."""

    path: str
    token: str


def _arg(value: str | bytes | int) -> bytes:
    if isinstance(value, int):
        return str(value).encode()
    raw = value.encode() if isinstance(value, str) else value
    if b"\0" in raw:
        raise ValueError(f"argument {raw!r} contains a NUL byte")
    return raw


def _strings(*args: str | bytes | int) -> bytes:
    return b"".join(_arg(a) + b"\0" for a in args)


def _ok(payload: bytes) -> None:
    if payload.rstrip(b"\0") != b"OK":
        raise ProtocolError(f"expected OK, got {payload[:64]!r}")


def _raw(payload: bytes) -> bytes:
    return payload


def _text(payload: bytes) -> str:
    return payload.rstrip(b"\0").decode()


def _names(payload: bytes) -> list[str]:
    return [p.decode() for p in payload.split(b"\0") if p]


def _bool(payload: bytes) -> bool:
    flag = payload.rstrip(b"\0")
    if flag not in (b"T", b"F"):
        raise ProtocolError(f"expected T or F, got {payload[:64]!r}")
    return flag == b"T"


def _int(payload: bytes) -> int:
    try:
        return int(payload.rstrip(b"\0"))
    except ValueError:
        raise ProtocolError(f"expected a number, got {payload[:64]!r}") from None


def _perms(payload: bytes) -> list[Perm]:
    try:
        return list(parse_perms([p.decode() for p in payload.split(b"\0") if p]))
    except (XsError, UnicodeDecodeError):
        raise ProtocolError(f"bad permission list {payload[:64]!r}") from None


def _directory_part(payload: bytes) -> tuple[str, list[str], bool]:
    """XS_DIRECTORY_PART: ``gencnt\0`` then names; an empty name marks the last part."""
    generation, _, rest = payload.partition(b"\0")
    done = rest in (b"", b"\0") or rest.endswith(b"\0\0")
    return generation.decode(), [p.decode() for p in rest.split(b"\0") if p], done


# --- the operations (docs/misc/xenstore.txt) ----------------------------------------


def read(path: str) -> Request[bytes]:
    return Request(XS.XS_READ, _strings(path), _raw)


def write(path: str, value: bytes | str) -> Request[None]:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return Request(XS.XS_WRITE, _strings(path) + data, _ok)


def mkdir(path: str) -> Request[None]:
    return Request(XS.XS_MKDIR, _strings(path), _ok)


def rm(path: str) -> Request[None]:
    return Request(XS.XS_RM, _strings(path), _ok)


def directory(path: str) -> Request[list[str]]:
    return Request(XS.XS_DIRECTORY, _strings(path), _names)


def directory_part(path: str, offset: int) -> Request[tuple[str, list[str], bool]]:
    return Request(XS.XS_DIRECTORY_PART, _strings(path, offset), _directory_part)


def get_perms(path: str) -> Request[list[Perm]]:
    return Request(XS.XS_GET_PERMS, _strings(path), _perms)


def set_perms(path: str, perms: Sequence[Perm | str]) -> Request[None]:
    texts = [p if isinstance(p, str) else format_perms([p])[0] for p in perms]
    return Request(XS.XS_SET_PERMS, _strings(path, *texts), _ok)


def watch(path: str, token: str) -> Request[None]:
    return Request(XS.XS_WATCH, _strings(path, token), _ok)


def unwatch(path: str, token: str) -> Request[None]:
    return Request(XS.XS_UNWATCH, _strings(path, token), _ok)


def transaction_start() -> Request[int]:
    return Request(XS.XS_TRANSACTION_START, b"\0", _int)


def transaction_end(commit: bool) -> Request[None]:
    return Request(XS.XS_TRANSACTION_END, _strings("T" if commit else "F"), _ok)


def get_domain_path(domid: int) -> Request[str]:
    return Request(XS.XS_GET_DOMAIN_PATH, _strings(domid), _text)


def introduce(domid: int, gfn: int, port: int) -> Request[None]:
    return Request(XS.XS_INTRODUCE, _strings(domid, gfn, port), _ok)


def release(domid: int) -> Request[None]:
    return Request(XS.XS_RELEASE, _strings(domid), _ok)


def resume(domid: int) -> Request[None]:
    return Request(XS.XS_RESUME, _strings(domid), _ok)


def is_domain_introduced(domid: int) -> Request[bool]:
    return Request(XS.XS_IS_DOMAIN_INTRODUCED, _strings(domid), _bool)


def set_target(domid: int, target: int) -> Request[None]:
    return Request(XS.XS_SET_TARGET, _strings(domid, target), _ok)


def reset_watches() -> Request[None]:
    return Request(XS.XS_RESET_WATCHES, b"\0", _ok)


def control(*args: str | bytes) -> Request[bytes]:
    return Request(XS.XS_CONTROL, _strings(*args), _raw)


# --- one connection's state ---------------------------------------------------------


class ClientProtocol:
    """Request ids, reply matching and watch-event demux for one connection.

    ``send(request, tx_id) -> (req_id, bytes)``; feed whatever the transport read to
    ``receive(data)``, which returns the watch events it found and the ids of the replies
    it stored for ``take_reply(req_id, request)``.
    """

    def __init__(self) -> None:
        self._decoder = PacketDecoder()
        self._next_id = 1
        self._pending: dict[int, int] = {}  # req_id -> request type
        self._replies: dict[int, Packet] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def send(self, request: Request[T], tx_id: int = 0) -> tuple[int, bytes]:
        """Allocate a request id and encode the request."""
        if len(request.payload) > XENSTORE_PAYLOAD_MAX:
            raise XenstoreError("E2BIG", f"request of {len(request.payload)} bytes")
        req_id = self._next_id
        while req_id in self._pending:
            req_id = req_id % _U32_MAX + 1
        self._next_id = req_id % _U32_MAX + 1
        self._pending[req_id] = request.type
        head = HEADER.pack(request.type, req_id, tx_id, len(request.payload))
        return req_id, head + request.payload

    def forget(self, req_id: int) -> None:
        """Abandon a request (its caller gave up); a late reply is then dropped."""
        self._pending.pop(req_id, None)
        self._replies.pop(req_id, None)

    def receive(self, data: bytes) -> tuple[list[WatchEvent], list[int]]:
        """Decode ``data``: the watch events in it and the ids of the replies now stored.

        Raises :class:`ProtocolError` on bytes no daemon would send.
        """
        self._decoder.feed(data)
        events: list[WatchEvent] = []
        replies: list[int] = []
        while True:
            try:
                packet = self._decoder.next_packet()
            except Exception as exc:
                raise ProtocolError(f"undecodable message from the daemon: {exc}") from exc
            if packet is None:
                return events, replies
            if packet.type == XS.XS_WATCH_EVENT:
                events.append(_watch_event(packet))
            elif packet.req_id in self._pending:
                self._replies[packet.req_id] = packet
                replies.append(packet.req_id)
            # A reply nobody waits for any more (caller timed out) is dropped.

    def has_reply(self, req_id: int) -> bool:
        return req_id in self._replies

    def take_reply(self, req_id: int, request: Request[T]) -> T:
        """The decoded reply to ``req_id`` (raises XenstoreError for XS_ERROR)."""
        packet = self._replies.pop(req_id)
        sent_type = self._pending.pop(req_id)
        if packet.type == XS.XS_ERROR:
            raise XenstoreError(packet.payload.rstrip(b"\0").decode(errors="replace"))
        if packet.type != sent_type:
            raise ProtocolError(f"reply type {packet.type} to a request of type {sent_type}")
        return request.decode(packet.payload)


def _watch_event(packet: Packet) -> WatchEvent:
    args = packet.args()
    if len(args) < 2:
        raise ProtocolError(f"watch event with {len(args)} fields")
    return WatchEvent(args[0].decode(errors="surrogateescape"), args[1].decode(errors="replace"))
