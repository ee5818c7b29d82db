"""The xs_wire codec: ``struct xsd_sockmsg`` header plus payload, as bytes in and packets out.

Sans-I/O: :class:`PacketDecoder` is fed whatever the transport read (a socket or the
shared ring) and hands out whole packets. A header announcing more than
``XENSTORE_PAYLOAD_MAX`` bytes means the stream can no longer be trusted; that is a
:class:`WireError` and the connection must be closed (docs/misc/xenstore.txt).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XsdSockmsgType

# struct xsd_sockmsg { uint32_t type, req_id, tx_id, len; } followed by len payload bytes.
HEADER = struct.Struct("<IIII")
_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from

_U32_MAX = 0xFFFF_FFFF


class WireError(Exception):
    """The byte stream cannot be trusted any more: the connection must be closed."""


class XsError(Exception):
    """A request failed with an ``xsd_errors`` name (answered as XS_ERROR ``b"NAME\\0"``)."""

    def __init__(self, name: str, detail: str = "") -> None:
        if name not in XSD_ERRORS:
            raise ValueError(f"{name!r} is not an xsd_errors name")
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name
        self.errno = XSD_ERRORS[name]


@dataclass(frozen=True, slots=True)
class Packet:
    """One xs_wire message. ``type`` stays an ``int`` so unknown types survive decoding."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes

    def __post_init__(self) -> None:
        for name, value in (("type", self.type), ("req_id", self.req_id), ("tx_id", self.tx_id)):
            if not isinstance(value, int) or not 0 <= value <= _U32_MAX:
                raise WireError(f"{name} {value!r} is not a u32")
        payload = self.payload
        if not isinstance(payload, bytes):
            raise WireError("payload must be bytes")
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            raise WireError(
                f"payload of {len(payload)} bytes exceeds XENSTORE_PAYLOAD_MAX "
                f"({XENSTORE_PAYLOAD_MAX})"
            )

    def encode(self) -> bytes:
        """The header followed by the payload, ready for the wire."""
        return HEADER.pack(self.type, self.req_id, self.tx_id, len(self.payload)) + self.payload

    def args(self) -> list[bytes]:
        """The NUL-separated arguments; one trailing NUL terminator is not an extra argument.

        ``b"a\\0b\\0"`` and ``b"a\\0b"`` both give ``[b"a", b"b"]``; ``b""`` gives ``[]``.
        """
        if not self.payload:
            return []
        parts = self.payload.split(b"\0")
        if parts[-1] == b"":
            parts.pop()
        return parts

    @classmethod
    def build(
        cls, type: int, req_id: int, tx_id: int, *args: bytes | str, terminate: bool = True
    ) -> Packet:
        """Join ``args`` with NULs; ``terminate`` also ends the last one with a NUL.

        ``terminate=False`` is for payloads whose last part is raw data (XS_WRITE's value,
        XS_READ's reply).
        """
        raw = [a.encode() if isinstance(a, str) else a for a in args]
        payload = b"\0".join(raw)
        if terminate and raw:
            payload += b"\0"
        return cls(int(type), req_id, tx_id, payload)


_SET_FIELDS = tuple(vars(Packet)[name].__set__ for name in ("type", "req_id", "tx_id", "payload"))


def unchecked_packet(type_: int, req_id: int, tx_id: int, payload: bytes) -> Packet:
    """A :class:`Packet` whose fields the caller has already checked: three u32s and a
    ``bytes`` payload of at most ``XENSTORE_PAYLOAD_MAX``.

    For the hot paths only (a header just decoded, a reply echoing a decoded request's
    header): it skips the per-field validation that ``Packet(...)`` does.
    """
    packet = object.__new__(Packet)
    set_type, set_req_id, set_tx_id, set_payload = _SET_FIELDS
    set_type(packet, type_)
    set_req_id(packet, req_id)
    set_tx_id(packet, tx_id)
    set_payload(packet, payload)
    return packet


class PacketDecoder:
    """Incremental decoder: ``feed`` bytes, then take packets with ``next_packet``.

    The unread bytes are ``_buf[_pos:]``: handing out a packet only moves ``_pos``, and
    what was handed out is dropped at the next ``feed``, so a read holding many packets
    is decoded with one copy per payload.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as a packet."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes read from the transport (copied: the caller may reuse ``data``)."""
        self._buf = self._buf[self._pos :] + bytes(data)
        self._pos = 0

    def next_packet(self) -> Packet | None:
        """The next whole packet, or ``None`` until more bytes arrive.

        Raises :class:`WireError` as soon as a header announces an oversized payload.
        """
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < _HEADER_SIZE:
            return None
        type_, req_id, tx_id, length = _unpack_header(buf, pos)
        if length > XENSTORE_PAYLOAD_MAX:
            raise WireError(f"header announces {length} payload bytes (max {XENSTORE_PAYLOAD_MAX})")
        start = pos + _HEADER_SIZE
        end = start + length
        if len(buf) < end:
            return None
        self._pos = end
        # unchecked_packet, inlined: the header's fields are u32s by construction and the
        # length is checked above.
        packet = object.__new__(Packet)
        set_type, set_req_id, set_tx_id, set_payload = _SET_FIELDS
        set_type(packet, type_)
        set_req_id(packet, req_id)
        set_tx_id(packet, tx_id)
        set_payload(packet, buf[start:end])
        return packet


def error_packet(req_id: int, tx_id: int, name: str) -> Packet:
    """An XS_ERROR reply carrying an errno name from ``XSD_ERRORS`` (``b"EINVAL\\0"``)."""
    if name not in XSD_ERRORS:
        raise ValueError(f"{name!r} is not an xsd_errors name")
    return Packet.build(XsdSockmsgType.XS_ERROR, req_id, tx_id, name)
