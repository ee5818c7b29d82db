"""One netfront queue: its tx and rx ring pages, buffers, event channel(s) and TAP queue.

Event channels: one port for both rings, or (``feature-split-event-channels``) one for
tx and one for rx; either way any event makes the queue look at both rings. The TAP is
read only while the tx ring and buffers have room for a largest frame; when they do
not, the queue waits for tx responses (it asked for an event with the final check).
"""

from __future__ import annotations

import os

from xenvirtio.drivers.netif.pages import GrantedPages
from xenvirtio.drivers.netif.rx import RxPath
from xenvirtio.drivers.netif.tx import MAX_SLOTS, TxPath
from xenvirtio.hv.api import Guest
from xenvirtio.pvring.netif.codecs import (
    RX_REQUEST_CODEC,
    RX_RESPONSE_CODEC,
    TX_REQUEST_CODEC,
    TX_RESPONSE_CODEC,
    RxRequest,
    TxResponse,
)
from xenvirtio.pvring.ring import FrontRing
from xenvirtio.spec import netif as N
from xenvirtio.spec.virtio_net import VIRTIO_NET_HDR_SIZE
from xenvirtio.transport.xenbus.reactor import Reactor

RING_SIZE = 256  # __CONST_RING_SIZE(netif_tx / netif_rx, 4096)
TX_BUDGET = 64
MAX_READ = VIRTIO_NET_HDR_SIZE + N.XEN_NETIF_MAX_TX_SIZE + N.ETH_HLEN + N.VLAN_HLEN


class FrontQueue:
    """Queue of ``guest``'s vif towards ``backend_domid``, reading/writing ``tap_fd``."""

    def __init__(
        self, guest: Guest, backend_domid: int, reactor: Reactor, tap_fd: int, *,
        split: bool, gso: bool,
    ) -> None:  # fmt: skip
        self.reactor = reactor
        self.tap_fd = tap_fd
        self.ring_pages = GrantedPages(guest, backend_domid, 2, readonly=False)
        tx_ring: FrontRing[bytes, TxResponse] = FrontRing(
            self.ring_pages.views[0], TX_REQUEST_CODEC, TX_RESPONSE_CODEC
        )
        rx_ring: FrontRing[RxRequest, bytes] = FrontRing(
            self.ring_pages.views[1], RX_REQUEST_CODEC, RX_RESPONSE_CODEC
        )
        self.tx_pages = GrantedPages(guest, backend_domid, RING_SIZE, readonly=True)
        self.rx_pages = GrantedPages(guest, backend_domid, RING_SIZE, readonly=False)
        self.tx = TxPath(tx_ring, self.tx_pages)
        self.rx = RxPath(rx_ring, self.rx_pages, gso)
        self.evtchn = guest.hypervisor.open_evtchn()
        self.tx_port = self.evtchn.bind_unbound_port(backend_domid)
        self.rx_port = self.evtchn.bind_unbound_port(backend_domid) if split else self.tx_port
        self.reading = False
        self.running = False
        reactor.register(self.evtchn.fd(), self._on_event)

    def keys(self) -> dict[str, str | int | bytes]:
        """This queue's keys (relative to its directory)."""
        keys: dict[str, str | int | bytes] = {
            N.KEY_TX_RING_REF: self.ring_pages.refs[0],
            N.KEY_RX_RING_REF: self.ring_pages.refs[1],
        }
        if self.rx_port == self.tx_port:
            keys[N.KEY_EVENT_CHANNEL] = self.tx_port
        else:
            keys[N.KEY_EVENT_CHANNEL_TX] = self.tx_port
            keys[N.KEY_EVENT_CHANNEL_RX] = self.rx_port
        return keys

    def start(self) -> None:
        """The backend is connected: post receive buffers, read the TAP."""
        self.running = True
        if self.rx.post():
            self.evtchn.notify(self.rx_port)
        self._update_reading()

    def _on_event(self) -> None:
        while (port := self.evtchn.pending()) is not None:
            self.evtchn.unmask(port)
        if self.running:
            self.service()

    def service(self) -> None:
        self.tx.complete()
        more = self.rx.receive(self.tap_fd)
        if self.rx.post():
            self.evtchn.notify(self.rx_port)
        self._update_reading()
        if more:
            self.reactor.call_soon(self._again)

    def _again(self) -> None:
        if self.running:
            self.service()

    def _on_tap(self) -> None:
        sent = 0
        while sent < TX_BUDGET and self.tx.room() >= MAX_SLOTS:
            try:
                data = os.read(self.tap_fd, MAX_READ)
            except (BlockingIOError, InterruptedError):
                break
            self.tx.put(data)
            sent += 1
        if sent and self.tx.ring.push_requests_and_check_notify():
            self.evtchn.notify(self.tx_port)
        self.tx.complete()
        self._update_reading()

    def _update_reading(self) -> None:
        want = self.running and self.tx.room() >= MAX_SLOTS
        if want and not self.reading:
            self.reactor.register(self.tap_fd, self._on_tap)
        elif not want and self.reading:
            self.reactor.unregister(self.tap_fd)
        self.reading = want

    def close(self) -> None:
        self.running = False
        self._update_reading()
        self.reactor.unregister(self.evtchn.fd())
        self.evtchn.close()
        for pages in (self.tx_pages, self.rx_pages, self.ring_pages):
            pages.close()
