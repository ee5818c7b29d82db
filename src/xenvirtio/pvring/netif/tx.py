"""Transmit packets (frontend -> backend): assembly and validation of ring slots.

Wire format (netif.h "Guest transmit"): a first ``netif_tx_request`` whose ``size`` is the
whole packet; if it has ``NETTXF_extra_info``, ``netif_extra_info`` slots follow (each
with ``XEN_NETIF_EXTRA_FLAG_MORE`` but the last); then, while a request has
``NETTXF_more_data``, further requests whose ``size`` is their own length. The first
fragment's length is the total minus the others'.

`TxAssembler.feed` takes the private copy of one slot at a time (as the backend
consumes them) and returns a `TxPacket` when one is complete. What only spoils one
packet makes it ``error`` (answered ``NETIF_RSP_ERROR``, as Linux netback's
``xenvif_tx_err``): too many data slots, a fragment past its page, sizes that do not add
up, runts, oversized frames, a bad GSO descriptor. What breaks the slot stream itself
raises `TxFatal` (the backend fails the device, as ``xenvif_fatal_tx_err``): an extra of
unknown type, too many extras, a chain past the fatal slot limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xenvirtio.pvring.netif.codecs import ExtraInfo, TxRequest, decode_extra, decode_tx_request
from xenvirtio.spec import netif as N

FATAL_SKB_SLOTS = 20  # Linux netback's fatal_skb_slots default
MAX_EXTRAS = N.XEN_NETIF_EXTRA_TYPE_MAX - 1  # one of each type


class TxFatal(Exception):
    """The frontend broke the transmit slot stream: fail the device."""


@dataclass(frozen=True)
class TxLimits:
    """What the backend accepts: non-GSO frames up to ``max_frame`` bytes; GSO types."""

    max_frame: int = 1500 + N.ETH_HLEN + N.VLAN_HLEN
    gso_tcpv4: bool = True
    gso_tcpv6: bool = True


@dataclass
class TxPacket:
    """One packet's slots. ``slot_ids`` gives, per ring slot in order, the request id to
    answer or None for an extra slot (answered ``NETIF_RSP_NULL``)."""

    first: TxRequest
    frags: list[TxRequest] = field(default_factory=list)
    extras: dict[int, ExtraInfo] = field(default_factory=dict)
    slot_ids: list[int | None] = field(default_factory=list)
    error: str | None = None

    @property
    def flags(self) -> int:
        return self.first.flags

    @property
    def size(self) -> int:
        return self.first.size

    @property
    def pieces(self) -> list[tuple[int, int, int]]:
        """(gref, offset, length) of each fragment, in order."""
        rest = sum(f.size for f in self.frags)
        head = (self.first.gref, self.first.offset, self.first.size - rest)
        return [head, *((f.gref, f.offset, f.size) for f in self.frags)]

    @property
    def gso(self) -> tuple[int, int] | None:
        """(gso_type, gso_size) when a GSO extra came with the packet."""
        extra = self.extras.get(N.XEN_NETIF_EXTRA_TYPE_GSO)
        if extra is None:
            return None
        size, gso_type, _ = extra.gso
        return gso_type, size

    @property
    def mcast(self) -> tuple[int, bytes] | None:
        """(MCAST_ADD or MCAST_DEL, address) for a multicast-filter request."""
        for kind in (N.XEN_NETIF_EXTRA_TYPE_MCAST_ADD, N.XEN_NETIF_EXTRA_TYPE_MCAST_DEL):
            if kind in self.extras:
                return kind, self.extras[kind].mcast_addr
        return None

    def responses(self, status: int) -> list[tuple[int, int]]:
        """(id, status) for every slot, in ring order."""
        return [(i, status) if i is not None else (0, N.NETIF_RSP_NULL) for i in self.slot_ids]


class TxAssembler:
    """Slot-by-slot packet assembly for one transmit ring (state survives partial
    packets: the rest of a chain may be published later)."""

    def __init__(self, limits: TxLimits) -> None:
        self.limits = limits
        self._packet: TxPacket | None = None
        self._want_extra = False

    @property
    def partial(self) -> bool:
        return self._packet is not None

    def feed(self, raw: bytes) -> TxPacket | None:
        """One slot's private copy; the packet when this slot completed it."""
        pkt = self._packet
        if pkt is None:
            req = decode_tx_request(raw)
            pkt = self._packet = TxPacket(req, slot_ids=[req.id])
            self._want_extra = bool(req.flags & N.NETTXF_extra_info)
            return self._maybe_done(req.flags)
        if self._want_extra:
            return self._feed_extra(pkt, decode_extra(raw))
        req = decode_tx_request(raw)
        pkt.frags.append(req)
        pkt.slot_ids.append(req.id)
        if len(pkt.frags) + 1 >= FATAL_SKB_SLOTS:
            raise TxFatal(f"packet of at least {FATAL_SKB_SLOTS} slots")
        return self._maybe_done(req.flags)

    def _feed_extra(self, pkt: TxPacket, extra: ExtraInfo) -> TxPacket | None:
        if not N.XEN_NETIF_EXTRA_TYPE_NONE < extra.type < N.XEN_NETIF_EXTRA_TYPE_MAX:
            raise TxFatal(f"extra info of type {extra.type}")
        if len(pkt.extras) >= MAX_EXTRAS or extra.type in pkt.extras:
            raise TxFatal("too many extra info slots")
        pkt.extras[extra.type] = extra
        pkt.slot_ids.append(None)
        if extra.flags & N.XEN_NETIF_EXTRA_FLAG_MORE:
            return None
        self._want_extra = False
        return self._maybe_done(pkt.first.flags)

    def _maybe_done(self, flags: int) -> TxPacket | None:
        if self._want_extra or flags & N.NETTXF_more_data:
            return None
        pkt, self._packet = self._packet, None
        assert pkt is not None
        pkt.error = check_packet(pkt, self.limits)
        return pkt


def check_packet(pkt: TxPacket, limits: TxLimits) -> str | None:
    """Why this packet must be dropped, or None."""
    if pkt.mcast is not None:
        return None if len(pkt.extras) == 1 else "multicast request with other extras"
    if len(pkt.frags) + 1 > N.XEN_NETIF_NR_SLOTS_MIN:
        return f"{len(pkt.frags) + 1} data slots"
    for gref, offset, length in pkt.pieces:
        if length < 0:
            return "fragment sizes exceed the packet size"
        if offset + length > N.XEN_PAGE_SIZE:
            return f"fragment of grant {gref} crosses its page"
    if pkt.size < N.ETH_HLEN:
        return f"runt packet of {pkt.size} bytes"
    gso = pkt.gso
    if gso is None:
        return f"packet of {pkt.size} bytes" if pkt.size > limits.max_frame else None
    gso_type, gso_size = gso
    allowed = {N.XEN_NETIF_GSO_TYPE_TCPV4: limits.gso_tcpv4,
               N.XEN_NETIF_GSO_TYPE_TCPV6: limits.gso_tcpv6}  # fmt: skip
    if not allowed.get(gso_type, False):
        return f"GSO type {gso_type}"
    if gso_size == 0:
        return "GSO size 0"
    if not pkt.flags & N.NETTXF_csum_blank:
        return "GSO without a partial checksum"
    return None
