"""netfront transmit: frames the guest's stack wrote to its TAP, onto the tx ring.

Each data slot uses one granted buffer page, whose index is the request ``id``; a
frame of n bytes takes ceil(n / 4096) slots (``NETTXF_more_data`` on all but the last),
plus a GSO extra slot after the first for TSO frames. A partial checksum
(``VIRTIO_NET_HDR_F_NEEDS_CSUM``) becomes ``NETTXF_csum_blank | NETTXF_data_validated``
as in Linux netfront. An id comes back free with its response; a response naming an id
not in flight is ignored (the backend is not trusted either).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from xenvirtio.drivers.netif.pages import GrantedPages
from xenvirtio.pvring.netif.codecs import (
    TxRequest,
    TxResponse,
    encode_extra,
    encode_tx_request,
    gso_extra,
)
from xenvirtio.pvring.ring import FrontRing
from xenvirtio.spec import netif as N
from xenvirtio.spec import virtio_net as V
from xenvirtio.spec.virtio_net import VirtioNetHdr

log = logging.getLogger("xenvirtio.netif.front")

_GSO = {
    V.VIRTIO_NET_HDR_GSO_TCPV4: N.XEN_NETIF_GSO_TYPE_TCPV4,
    V.VIRTIO_NET_HDR_GSO_TCPV6: N.XEN_NETIF_GSO_TYPE_TCPV6,
}


@dataclass
class TxCounters:
    packets: int = 0
    bytes: int = 0
    gso: int = 0
    dropped: int = 0  # frames the frontend could not put (bad header, too large)
    errors: int = 0  # responses other than NETIF_RSP_OKAY


class TxPath:
    """Transmit side of one queue: ``ring`` and its buffer ``pages`` (one per id)."""

    def __init__(self, ring: FrontRing[bytes, TxResponse], pages: GrantedPages) -> None:
        self.ring = ring
        self.pages = pages
        self.free = list(range(len(pages.refs)))
        self.inflight: set[int] = set()
        self.counters = TxCounters()

    def room(self) -> int:
        """Slots a frame may use now (ring and buffers both)."""
        return min(self.ring.free_requests(), len(self.free))

    def put(self, data: bytes) -> bool:
        """Queue one frame read from the TAP (vnet header first); False when it was
        dropped. The caller made sure `room` covers `MAX_SLOTS`."""
        hdr = VirtioNetHdr.unpack(data)
        frame = memoryview(data)[V.VIRTIO_NET_HDR_SIZE :]
        flags = 0
        if hdr.flags & V.VIRTIO_NET_HDR_F_NEEDS_CSUM:
            flags = N.NETTXF_csum_blank | N.NETTXF_data_validated
        gso = _GSO.get(hdr.gso_type & ~V.VIRTIO_NET_HDR_GSO_ECN)
        if (hdr.gso_type and gso is None) or len(frame) > N.XEN_NETIF_MAX_TX_SIZE:
            self.counters.dropped += 1
            return False
        chunks = [frame[at : at + N.XEN_PAGE_SIZE] for at in range(0, len(frame), N.XEN_PAGE_SIZE)]
        for n, chunk in enumerate(chunks):
            rid = self.free.pop()
            self.inflight.add(rid)
            self.pages.views[rid][: len(chunk)] = chunk
            more = N.NETTXF_more_data if n < len(chunks) - 1 else 0
            if n == 0:
                extra = N.NETTXF_extra_info if gso is not None else 0
                req = TxRequest(self.pages.refs[rid], 0, flags | more | extra, rid, len(frame))
                self.ring.put_request(encode_tx_request(req))
                if gso is not None:
                    raw = encode_extra(gso_extra(hdr.gso_size, gso), N.TX_SLOT_SIZE)
                    self.ring.put_request(raw)
            else:
                req = TxRequest(self.pages.refs[rid], 0, more, rid, len(chunk))
                self.ring.put_request(encode_tx_request(req))
        self.counters.packets += 1
        self.counters.bytes += len(frame)
        self.counters.gso += gso is not None
        return True

    def complete(self) -> int:
        """Take the responses; the number of buffers freed."""
        freed = 0
        while True:
            while (rsp := self.ring.get_response()) is not None:
                if rsp.status == N.NETIF_RSP_NULL:
                    continue
                if rsp.id not in self.inflight:
                    log.debug("tx response for id %d not in flight", rsp.id)
                    continue
                if rsp.status != N.NETIF_RSP_OKAY:
                    self.counters.errors += 1
                self.inflight.discard(rsp.id)
                self.free.append(rsp.id)
                freed += 1
            if not self.ring.final_check_for_responses():
                return freed


MAX_SLOTS = -(-(N.XEN_NETIF_MAX_TX_SIZE) // N.XEN_PAGE_SIZE) + 1  # data slots + GSO extra
