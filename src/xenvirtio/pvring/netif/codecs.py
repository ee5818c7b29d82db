"""netif ring slots: the four ring codecs and the slot encoders and decoders.

A transmit-ring request slot holds a ``netif_tx_request`` or a ``netif_extra_info``
(which one depends on the slots before it), so the transmit request codec and the
receive response codec move raw slot bytes; `decode_tx_request`, `decode_extra` and
`decode_rx_response` give them meaning. Decoders accept any bytes: validation is the
assemblers' job, on the decoded private copy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xenvirtio.pvring.ring import StructCodec
from xenvirtio.spec import netif as N


@dataclass(frozen=True, slots=True)
class TxRequest:
    """``struct netif_tx_request``."""

    gref: int
    offset: int
    flags: int
    id: int
    size: int


@dataclass(frozen=True, slots=True)
class TxResponse:
    """``struct netif_tx_response``."""

    id: int
    status: int


@dataclass(frozen=True, slots=True)
class RxRequest:
    """``struct netif_rx_request``."""

    id: int
    gref: int


@dataclass(frozen=True, slots=True)
class RxResponse:
    """``struct netif_rx_response``: ``status`` is the fragment's length, or < 0."""

    id: int
    offset: int
    flags: int
    status: int


@dataclass(frozen=True, slots=True)
class ExtraInfo:
    """``struct netif_extra_info``; ``payload`` is the 6-byte union ``u``."""

    type: int
    flags: int
    payload: bytes = bytes(6)

    @property
    def gso(self) -> tuple[int, int, int]:
        """``u.gso``: (size, type, features)."""
        size, gso_type, features = N.EXTRA_GSO.unpack(self.payload)
        return int(size), int(gso_type), int(features)

    @property
    def mcast_addr(self) -> bytes:
        """``u.mcast.addr``."""
        return self.payload


def _raw(size: int) -> StructCodec[bytes]:
    return StructCodec(struct.Struct(f"<{size}s"), 4, lambda m: (m,), lambda v: bytes(v[0]))


TX_REQUEST_CODEC: StructCodec[bytes] = _raw(N.TX_SLOT_SIZE)
TX_RESPONSE_CODEC: StructCodec[TxResponse] = StructCodec(
    N.TX_RESPONSE, 2, lambda r: (r.id, r.status), lambda v: TxResponse(*v)
)
RX_REQUEST_CODEC: StructCodec[RxRequest] = StructCodec(
    N.RX_REQUEST, 4, lambda r: (r.id, r.gref), lambda v: RxRequest(*v)
)
RX_RESPONSE_CODEC: StructCodec[bytes] = _raw(N.RX_SLOT_SIZE)


def decode_tx_request(raw: bytes) -> TxRequest:
    return TxRequest(*N.TX_REQUEST.unpack_from(raw))


def encode_tx_request(req: TxRequest) -> bytes:
    return N.TX_REQUEST.pack(req.gref, req.offset, req.flags, req.id, req.size)


def decode_extra(raw: bytes) -> ExtraInfo:
    kind, flags, payload = N.EXTRA_INFO.unpack_from(raw)
    return ExtraInfo(kind, flags, bytes(payload))


def encode_extra(extra: ExtraInfo, slot_size: int) -> bytes:
    """The extra in a slot of ``slot_size`` bytes (12 on the tx ring, 8 on the rx ring)."""
    return N.EXTRA_INFO.pack(extra.type, extra.flags, extra.payload).ljust(slot_size, b"\0")


def gso_extra(size: int, gso_type: int, more: bool = False) -> ExtraInfo:
    """``XEN_NETIF_EXTRA_TYPE_GSO`` for segments of ``size`` bytes."""
    flags = N.XEN_NETIF_EXTRA_FLAG_MORE if more else 0
    return ExtraInfo(N.XEN_NETIF_EXTRA_TYPE_GSO, flags, N.EXTRA_GSO.pack(size, gso_type, 0))


def decode_rx_response(raw: bytes) -> RxResponse:
    return RxResponse(*N.RX_RESPONSE.unpack_from(raw))


def encode_rx_response(rsp: RxResponse) -> bytes:
    return N.RX_RESPONSE.pack(rsp.id, rsp.offset, rsp.flags, rsp.status)
