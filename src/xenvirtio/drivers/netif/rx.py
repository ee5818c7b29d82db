"""netfront receive: buffers posted on the rx ring, responses written to the TAP.

The buffer of ring slot i is page ``i % RING_SIZE`` and its request ``id`` is that index
(Linux netfront keeps them the same way and looks buffers up by ring index). Every
response consumed frees its slot, which is posted again at once. Responses are
assembled with `RxAssembler`; a packet with a wrong id, a bad status, a fragment past
its page or an offload the frontend did not ask for is dropped and counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from xenvirtio.drivers.netif.pages import GrantedPages
from xenvirtio.pvring.netif.codecs import RxRequest
from xenvirtio.pvring.netif.rx import RxAssembler, RxPacket
from xenvirtio.pvring.netif.vnet import rx_vnet_header
from xenvirtio.pvring.ring import FrontRing


@dataclass
class RxCounters:
    packets: int = 0
    bytes: int = 0
    gso: int = 0
    dropped: int = 0


class RxPath:
    """Receive side of one queue: ``ring``, one buffer page per ring slot."""

    def __init__(self, ring: FrontRing[RxRequest, bytes], pages: GrantedPages, gso: bool) -> None:
        self.ring = ring
        self.pages = pages
        self.mask = ring.nr_ents - 1
        self.gso = gso
        self.assembler = RxAssembler()
        self.counters = RxCounters()

    def post(self) -> bool:
        """Post every free slot; True if the backend must be notified."""
        if self.ring.free_requests() == 0 or self.assembler.partial:
            return False  # a half-received packet's buffers still hold its data
        while self.ring.free_requests():
            rid = self.ring.req_prod_pvt & self.mask
            self.ring.put_request(RxRequest(rid, self.pages.refs[rid]))
        return self.ring.push_requests_and_check_notify()

    def receive(self, tap_fd: int, budget: int = 64) -> bool:
        """Deliver up to ``budget`` packets to the TAP; True when more may be waiting."""
        done = 0
        while done < budget:
            slot = self.ring.rsp_cons
            raw = self.ring.get_response()
            if raw is None:
                if not self.ring.final_check_for_responses():
                    return False
                continue
            pkt = self.assembler.feed(raw, slot, slot & self.mask)
            if pkt is not None:
                self._deliver(pkt, tap_fd)
                done += 1
        return True

    def _deliver(self, pkt: RxPacket, tap_fd: int) -> None:
        if pkt.error is not None or (pkt.gso is not None and not self.gso):
            self.counters.dropped += 1
            return
        frame = b"".join(
            bytes(self.pages.views[slot & self.mask][off : off + n]) for slot, off, n in pkt.frags
        )
        hdr = rx_vnet_header(pkt, frame)
        if hdr is None:
            self.counters.dropped += 1
            return
        try:
            os.writev(tap_fd, [hdr, frame])
        except OSError:
            self.counters.dropped += 1
            return
        self.counters.packets += 1
        self.counters.bytes += len(frame)
        self.counters.gso += pkt.gso is not None
