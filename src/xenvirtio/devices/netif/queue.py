"""One netback queue: a transmit ring and a receive ring, served against one TAP queue.

Transmit: slots are copied out of the ring once and assembled into packets
(`TxAssembler`); the good packets of a round are fetched with one grant-copy batch and
written to the TAP with a vnet header; every slot is answered (``NETIF_RSP_OKAY``,
``NETIF_RSP_ERROR`` for a dropped packet, ``NETIF_RSP_NULL`` for extra slots). A broken
slot stream raises `TxFatal`, a producer overflow `RingProducerOverflow`: the caller
fails the device.

Receive (rx-copy): a frame read from the TAP takes as many posted receive requests as
it has pages (plus one for the GSO extra) and is grant-copied into them. With too few
requests posted the frame waits and the TAP is not read until the frontend posts more
(its rx kick).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from xenvirtio.devices.netif.grantcopy import copy_packets
from xenvirtio.devices.netif.stats import VifStats
from xenvirtio.hv.api.gnttab import Gnttab, GrantCopySegment, GrantRef
from xenvirtio.pvring.netif.codecs import (
    RX_REQUEST_CODEC,
    RX_RESPONSE_CODEC,
    TX_REQUEST_CODEC,
    TX_RESPONSE_CODEC,
    RxRequest,
    RxResponse,
    TxResponse,
    encode_rx_response,
)
from xenvirtio.pvring.netif.rx import RxMeta, rx_layout, rx_slots
from xenvirtio.pvring.netif.tx import TxAssembler, TxLimits, TxPacket
from xenvirtio.pvring.netif.vnet import rx_meta, tx_vnet_header
from xenvirtio.pvring.ring import REQ_EVENT_OFF, RING_IDX_MASK, BackRing, store_index
from xenvirtio.spec import netif as N
from xenvirtio.spec.virtio_net import VIRTIO_NET_HDR_SIZE

log = logging.getLogger("xenvirtio.netif.back")

TX_BATCH = 64  # slots per round
RX_BATCH = 32  # frames per round
MAX_READ = VIRTIO_NET_HDR_SIZE + N.XEN_NETIF_MAX_TX_SIZE + N.ETH_HLEN + N.VLAN_HLEN


@dataclass
class Peer:
    """What the frontend negotiated, and the vif state every queue shares."""

    domid: int
    gnttab: Gnttab
    limits: TxLimits
    sg: bool = True
    gso_tcpv4: bool = False
    gso_tcpv6: bool = False
    mcast_control: bool = False
    mcast: set[bytes] = field(default_factory=set)
    stats: VifStats = field(default_factory=VifStats)


class NetifQueue:
    """Rings ``tx_pages``/``rx_pages`` (mapped) of ``peer``, TAP queue ``tap_fd``."""

    def __init__(
        self, peer: Peer, tx_pages: memoryview, rx_pages: memoryview, tap_fd: int,
        notify_tx: Callable[[], None], notify_rx: Callable[[], None],
    ) -> None:  # fmt: skip
        self.peer = peer
        self.tx: BackRing[bytes, TxResponse] = BackRing(
            tx_pages, TX_REQUEST_CODEC, TX_RESPONSE_CODEC
        )
        self.rx: BackRing[RxRequest, bytes] = BackRing(
            rx_pages, RX_REQUEST_CODEC, RX_RESPONSE_CODEC
        )
        self.assembler = TxAssembler(peer.limits)
        self.tap_fd = tap_fd
        self.notify_tx = notify_tx
        self.notify_rx = notify_rx
        self.pending: tuple[bytes, RxMeta] | None = None  # a frame waiting for buffers
        self.reading = True  # False while `pending` waits for the frontend's rx kick

    # --- transmit -------------------------------------------------------------------
    def service_tx(self) -> bool:
        """One round (at most `TX_BATCH` slots); True when more may be waiting."""
        packets: list[TxPacket] = []
        taken = 0
        while taken < TX_BATCH and (raw := self.tx.copy_request()) is not None:
            taken += 1
            pkt = self.assembler.feed(raw)  # TxFatal propagates
            if pkt is not None:
                packets.append(pkt)
        self._transmit(packets)
        if packets and self.tx.push_responses_and_check_notify():
            self.notify_tx()
        return taken == TX_BATCH or self.tx.final_check_for_requests()

    def _transmit(self, packets: list[TxPacket]) -> None:
        frames: dict[int, bytearray] = {}
        segs: list[list[GrantCopySegment]] = []
        for n, pkt in enumerate(packets):
            if pkt.error is None and pkt.mcast is None:
                frames[n] = bytearray(pkt.size)
                segs.append(self._tx_segments(pkt, frames[n]))
        verdicts = iter(copy_packets(self.peer.gnttab, segs))
        for n, pkt in enumerate(packets):
            status = N.NETIF_RSP_OKAY
            if pkt.mcast is not None and pkt.error is None:
                self._mcast(*pkt.mcast)
            elif pkt.error is not None:
                status = self._tx_drop(pkt.error)
            elif not next(verdicts):
                status = self._tx_drop("grant copy failed")
            else:
                status = self._write_tap(pkt, bytes(frames[n]))
            for rid, st in pkt.responses(status):
                self.tx.put_response(TxResponse(rid, st))

    def _tx_segments(self, pkt: TxPacket, frame: bytearray) -> list[GrantCopySegment]:
        view, at, out = memoryview(frame), 0, []
        for gref, offset, length in pkt.pieces:
            if length:
                src = GrantRef(self.peer.domid, gref, offset)
                out.append(GrantCopySegment(src, view[at : at + length], length))
            at += length
        return out

    def _write_tap(self, pkt: TxPacket, frame: bytes) -> int:
        hdr = tx_vnet_header(pkt, frame)
        if isinstance(hdr, str):
            return self._tx_drop(hdr)
        try:
            os.writev(self.tap_fd, [hdr, frame])
        except OSError as exc:  # the stack refused it: the frontend's send still completed
            self.peer.stats.tx_dropped[f"tap: {exc.strerror}"] += 1
            return N.NETIF_RSP_OKAY
        stats = self.peer.stats
        stats.tx_packets += 1
        stats.tx_bytes += len(frame)
        stats.tx_gso += pkt.gso is not None
        return N.NETIF_RSP_OKAY

    def _tx_drop(self, reason: str) -> int:
        self.peer.stats.tx_dropped[reason] += 1
        log.debug("vif of domain %d: tx drop: %s", self.peer.domid, reason)
        return N.NETIF_RSP_ERROR

    def _mcast(self, kind: int, addr: bytes) -> None:
        if kind == N.XEN_NETIF_EXTRA_TYPE_MCAST_ADD:
            if len(self.peer.mcast) < 64:  # Linux XEN_NETBK_MCAST_MAX
                self.peer.mcast.add(addr)
        else:
            self.peer.mcast.discard(addr)

    # --- receive --------------------------------------------------------------------
    def service_rx(self) -> bool:
        """One round: frames from the TAP into posted buffers. True when more may be
        waiting; `reading` says whether the TAP should be watched."""
        batch: list[tuple[bytes, RxMeta, list[RxRequest]]] = []
        while len(batch) < RX_BATCH:
            item = self.pending or self._read_frame()
            self.pending = None
            if item is None:
                break
            frame, meta = item
            need = rx_slots(len(frame), meta)
            if self.rx.unconsumed_requests() < need:
                self.pending, self.reading = item, False
                break
            reqs = [r for _ in range(need) if (r := self.rx.copy_request()) is not None]
            batch.append((frame, meta, reqs))
        self._deliver(batch)
        self.reading = True
        if self.pending is not None:
            frame, meta = self.pending
            self.reading = self._arm_rx(rx_slots(len(frame), meta))
        return len(batch) == RX_BATCH or (self.pending is not None and self.reading)

    def _arm_rx(self, need: int) -> bool:
        """Ask to be kicked by the next buffer posted (``req_event = req_prod + 1``, as
        Linux's ``xenvif_rx_ring_slots_available``); True if ``need`` are there now."""
        prod = self.rx.sring_indices[0]
        store_index(self.rx.buf, REQ_EVENT_OFF, (prod + 1) & RING_IDX_MASK)
        return self.rx.unconsumed_requests() >= need

    def _read_frame(self) -> tuple[bytes, RxMeta] | None:
        while True:
            try:
                data = os.read(self.tap_fd, MAX_READ)
            except (BlockingIOError, InterruptedError):
                return None
            item = self._accept(data)
            if item is not None:
                return item

    def _accept(self, data: bytes) -> tuple[bytes, RxMeta] | None:
        peer = self.peer
        frame = data[VIRTIO_NET_HDR_SIZE:]
        meta = rx_meta(data[:VIRTIO_NET_HDR_SIZE], gso_tcpv4=peer.gso_tcpv4,
                       gso_tcpv6=peer.gso_tcpv6)  # fmt: skip
        reason = None
        if meta is None or len(frame) < N.ETH_HLEN:
            reason = "offload not negotiated" if meta is not None else "bad frame"
        elif len(frame) > N.XEN_PAGE_SIZE and not peer.sg:
            reason = "frame needs feature-sg"
        elif peer.mcast_control and frame[0] & 1 and frame[:6] != b"\xff" * 6:
            reason = None if frame[:6] in peer.mcast else "multicast filtered"
        if reason is not None or meta is None:
            peer.stats.rx_dropped[reason or "bad frame"] += 1
            return None
        return frame, meta

    def _deliver(self, batch: list[tuple[bytes, RxMeta, list[RxRequest]]]) -> None:
        segs: list[list[GrantCopySegment]] = []
        for frame, meta, reqs in batch:
            data_reqs = [reqs[0], *reqs[2:]] if meta.gso_type else reqs
            segs.append([
                GrantCopySegment(frame[at : at + N.XEN_PAGE_SIZE],
                                 GrantRef(self.peer.domid, req.gref, 0),
                                 min(N.XEN_PAGE_SIZE, len(frame) - at))
                for req, at in zip(data_reqs, range(0, len(frame), N.XEN_PAGE_SIZE), strict=False)
            ])  # fmt: skip
        verdicts = copy_packets(self.peer.gnttab, segs)
        for (frame, meta, reqs), ok in zip(batch, verdicts, strict=True):
            self._respond(frame, meta, reqs, ok)
        if batch and self.rx.push_responses_and_check_notify():
            self.notify_rx()

    def _respond(self, frame: bytes, meta: RxMeta, reqs: list[RxRequest], ok: bool) -> None:
        stats = self.peer.stats
        if not ok:
            stats.rx_dropped["grant copy failed"] += 1
            for req in reqs:
                error = RxResponse(req.id, 0, 0, N.NETIF_RSP_ERROR)
                self.rx.put_response(encode_rx_response(error))
            return
        _, slots = rx_layout(len(frame), meta, [r.id for r in reqs])
        for raw in slots:
            self.rx.put_response(raw)
        stats.rx_packets += 1
        stats.rx_bytes += len(frame)
        stats.rx_gso += meta.gso_size > 0
