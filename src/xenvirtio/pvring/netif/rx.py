"""Receive packets (backend -> frontend): laying a frame out on posted buffers
(backend), and assembling and checking the responses (frontend).

Wire format (netif.h "Guest receive"): one response per fragment, each ``status`` its
own length; the first carries the packet's flags (``NETRXF_csum_blank``,
``NETRXF_data_validated``, ``NETRXF_extra_info``), every fragment but the last
``NETRXF_more_data``; extra-info slots follow the first response. Every slot, extras
included, uses up one posted receive request, and responses come in the order of the
requests (Linux netfront finds a buffer by ring index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xenvirtio.pvring.netif.codecs import (
    ExtraInfo,
    RxResponse,
    decode_extra,
    decode_rx_response,
    encode_extra,
    encode_rx_response,
    gso_extra,
)
from xenvirtio.spec import netif as N

MAX_RX_SLOTS = N.XEN_NETIF_NR_SLOTS_MIN + 1  # data slots of a 64 KiB frame, plus the GSO extra


@dataclass(frozen=True)
class RxMeta:
    """What the backend tells about a frame: ``NETRXF_*`` checksum flags and GSO."""

    flags: int = 0
    gso_type: int = N.XEN_NETIF_GSO_TYPE_NONE
    gso_size: int = 0


def rx_slots(frame_len: int, meta: RxMeta) -> int:
    """Receive requests a frame uses (whole pages from offset 0, plus the GSO extra)."""
    data = max(1, -(-frame_len // N.XEN_PAGE_SIZE))
    return data + (1 if meta.gso_type != N.XEN_NETIF_GSO_TYPE_NONE else 0)


def rx_layout(frame_len: int, meta: RxMeta, ids: list[int]) -> tuple[list[int], list[bytes]]:
    """The data slots' lengths and the response slots (raw, in ring order) for a frame
    put into the buffers of requests ``ids`` (``rx_slots`` of them)."""
    lengths = [
        min(N.XEN_PAGE_SIZE, frame_len - at) for at in range(0, max(frame_len, 1), N.XEN_PAGE_SIZE)
    ]
    gso = meta.gso_type != N.XEN_NETIF_GSO_TYPE_NONE
    slots: list[bytes] = []
    data_ids = [ids[0], *ids[2:]] if gso else list(ids)
    for n, (rid, length) in enumerate(zip(data_ids, lengths, strict=True)):
        flags = N.NETRXF_more_data if n < len(lengths) - 1 else 0
        if n == 0:
            flags |= meta.flags | (N.NETRXF_extra_info if gso else 0)
        slots.append(encode_rx_response(RxResponse(rid, 0, flags, length)))
        if n == 0 and gso:
            extra = gso_extra(meta.gso_size, meta.gso_type)
            slots.append(encode_extra(extra, N.RX_SLOT_SIZE))
    return lengths, slots


@dataclass
class RxPacket:
    """A received packet: (slot index, offset, length) per fragment; ``error`` when it
    must be dropped. ``slots`` ring slots were used."""

    flags: int = 0
    frags: list[tuple[int, int, int]] = field(default_factory=list)
    gso: tuple[int, int] | None = None  # (gso_type, gso_size)
    slots: int = 0
    error: str | None = None

    @property
    def size(self) -> int:
        return sum(length for _, _, length in self.frags)


class RxAssembler:
    """The frontend's view of the receive responses, one slot at a time.

    ``feed(raw, expected_id)`` gets the private copy of a response and the id of the
    request posted at that ring slot; returns the packet when the slot completed one.
    A lying backend (wrong id, negative status, a fragment past the page, too many
    slots, unknown extras) only costs the packet.
    """

    def __init__(self) -> None:
        self._pkt: RxPacket | None = None
        self._want_extra = False
        self._more = False

    @property
    def partial(self) -> bool:
        """A packet is half-received (its buffers must not be posted again yet)."""
        return self._pkt is not None

    def feed(self, raw: bytes, slot: int, expected_id: int) -> RxPacket | None:
        pkt = self._pkt
        if pkt is None:
            pkt = self._pkt = RxPacket()
        pkt.slots += 1
        if self._want_extra:
            self._extra(pkt, decode_extra(raw))
        else:
            self._data(pkt, decode_rx_response(raw), slot, expected_id)
        if pkt.slots > MAX_RX_SLOTS:
            pkt.error = pkt.error or f"{pkt.slots} slots"
        if self._want_extra or self._more:
            return None
        self._pkt = None
        return pkt

    def _data(self, pkt: RxPacket, rsp: RxResponse, slot: int, expected_id: int) -> None:
        first = not pkt.frags and pkt.slots == 1
        if first:
            pkt.flags = rsp.flags
            self._want_extra = bool(rsp.flags & N.NETRXF_extra_info)
        self._more = bool(rsp.flags & N.NETRXF_more_data)
        if rsp.id != expected_id:
            pkt.error = pkt.error or f"response id {rsp.id}, request id {expected_id}"
        elif rsp.status < 0:
            pkt.error = pkt.error or f"status {rsp.status}"
        elif rsp.offset + rsp.status > N.XEN_PAGE_SIZE:
            pkt.error = pkt.error or "fragment past the page"
        if pkt.slots <= MAX_RX_SLOTS:  # an endless chain is bounded (and already an error)
            pkt.frags.append((slot, rsp.offset, max(rsp.status, 0)))

    def _extra(self, pkt: RxPacket, extra: ExtraInfo) -> None:
        self._want_extra = bool(extra.flags & N.XEN_NETIF_EXTRA_FLAG_MORE)
        if extra.type == N.XEN_NETIF_EXTRA_TYPE_GSO:
            size, gso_type, _ = extra.gso
            if gso_type not in (N.XEN_NETIF_GSO_TYPE_TCPV4, N.XEN_NETIF_GSO_TYPE_TCPV6) or not size:
                pkt.error = pkt.error or f"GSO type {gso_type} size {size}"
            pkt.gso = (gso_type, size)
        elif not N.XEN_NETIF_EXTRA_TYPE_NONE < extra.type < N.XEN_NETIF_EXTRA_TYPE_MAX:
            pkt.error = pkt.error or f"extra info of type {extra.type}"
