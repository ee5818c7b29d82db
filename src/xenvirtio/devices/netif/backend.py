"""netback: one ``vif`` backend device, the XenBus handshake as Linux's netback runs it.

At start (and each time it enters InitWait) the backend publishes what it offers:
``feature-sg``, ``feature-gso-tcpv4``/``-tcpv6``, ``feature-ipv6-csum-offload``,
``feature-rx-copy`` (``feature-rx-flip`` 0), ``feature-multicast-control``,
``feature-split-event-channels`` and ``multi-queue-max-queues``. When the frontend is
Initialised it reads ``request-rx-copy`` and ``feature-rx-notify`` (both mandatory),
``feature-sg``, ``feature-gso-tcpv4/6``, ``feature-no-csum-offload``,
``feature-ipv6-csum-offload``, ``request-multicast-control``, ``multi-queue-num-queues``
and, per queue (under ``queue-<q>/`` with several), ``tx-ring-ref``, ``rx-ring-ref`` and
``event-channel`` or ``event-channel-tx``/``-rx``; maps the rings, binds the ports,
turns the vif's carrier on and goes Connected. A key out of range, a broken ring or a
broken transmit slot stream fails this device only (``dev_fatal``).
"""

from __future__ import annotations

import errno
import logging

from xenvirtio.devices.netif.queue import NetifQueue, Peer
from xenvirtio.devices.netif.reads import FrontendKeys, read_frontend
from xenvirtio.devices.netif.vif import Vif, VifConfig, rx_offloads, vif_name
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.api.evtchn import Evtchn
from xenvirtio.hv.api.gnttab import Gnttab
from xenvirtio.hv.api.mapping import GrantMapping
from xenvirtio.hv.xenbus.client import scatter
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.paths import parse_backend_dir
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.pvring.netif.tx import TxFatal, TxLimits
from xenvirtio.pvring.ring import RingProducerOverflow
from xenvirtio.spec import netif as N
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.store import ReactorStore

log = logging.getLogger("xenvirtio.netif.back")

MAX_ROUNDS = 4  # rounds per queue per event before yielding to other devices


class NetifBackend(XenbusDriver):
    """The `XenbusDriver` of one vif backend directory."""

    def __init__(
        self, hv: Hypervisor, store: ReactorStore, reactor: Reactor, nodename: str,
        config: VifConfig,
    ) -> None:  # fmt: skip
        self.hv = hv
        self.reactor = reactor
        self.config = config
        path = parse_backend_dir(nodename)
        self.vif = Vif(vif_name(path.frontend_domid, path.devid), config)
        self.queues: list[NetifQueue] = []
        self.peer: Peer | None = None
        self.keys: FrontendKeys | None = None
        self._handlers: dict[int, list[tuple[NetifQueue, bool]]] = {}  # port -> (queue, tx?)
        self._reading: set[int] = set()
        self._evtchn: Evtchn | None = None
        self._gnttab: Gnttab | None = None
        self._rings: list[GrantMapping] = []
        self.dev = XenbusDevice.probe(store, Role.BACKEND, nodename, self)

    def start(self) -> None:
        self.dev.watch()
        self._publish_offer()
        if self.dev.state is not XenbusState.INIT_WAIT:
            self.dev.switch_state(XenbusState.INIT_WAIT)

    def _publish_offer(self) -> None:
        c = self.config
        scatter(self.dev.xs, self.dev.nodename, {
            N.KEY_FEATURE_SG: 1,
            N.KEY_FEATURE_GSO_TCPV4: int(c.gso),
            N.KEY_FEATURE_GSO_TCPV6: int(c.gso),
            N.KEY_FEATURE_IPV6_CSUM_OFFLOAD: 1,
            N.KEY_FEATURE_RX_COPY: 1,
            N.KEY_FEATURE_RX_FLIP: 0,
            N.KEY_FEATURE_MULTICAST_CONTROL: int(c.multicast_control),
            N.KEY_FEATURE_SPLIT_EVENT_CHANNELS: int(c.split_event_channels),
            N.KEY_MULTI_QUEUE_MAX_QUEUES: c.max_queues,
        })  # fmt: skip

    # --- XenbusDriver hooks ---------------------------------------------------------
    def setup(self, dev: XenbusDevice) -> None:
        self._publish_offer()

    def connect(self, dev: XenbusDevice) -> None:
        """``connect_data_rings``: read the frontend's keys, map rings, bind ports."""
        self.disconnect(dev)
        keys = self.keys = read_frontend(dev.xs, dev.otherend, self.config)
        self._gnttab = self.hv.open_gnttab()
        self._evtchn = self.hv.open_evtchn()
        mtu_frame = self.config.mtu + N.ETH_HLEN + N.VLAN_HLEN
        limits = TxLimits(mtu_frame, gso_tcpv4=self.config.gso, gso_tcpv6=self.config.gso)
        self.peer = Peer(dev.otherend_id, self._gnttab, limits, sg=keys.sg,
                         gso_tcpv4=keys.gso_tcpv4 and keys.sg,
                         gso_tcpv6=keys.gso_tcpv6 and keys.sg,
                         mcast_control=keys.mcast_control)  # fmt: skip
        offloads = rx_offloads(keys.csum, self.peer.gso_tcpv4, self.peer.gso_tcpv6)
        fds = self.vif.use_queues(len(keys.queues), offloads)
        for qkeys, fd in zip(keys.queues, fds, strict=True):
            self._connect_queue(qkeys.tx_ring_ref, qkeys.rx_ring_ref, qkeys.ports, fd)
        self.reactor.register(self._evtchn.fd(), self._on_event)
        for queue in self.queues:
            self._watch_tap(queue, True)
        self.vif.set_carrier(True)

    def _connect_queue(self, tx_ref: int, rx_ref: int, ports: tuple[int, int], fd: int) -> None:
        assert self._gnttab is not None and self._evtchn is not None and self.peer is not None
        domid, evtchn = self.peer.domid, self._evtchn
        tx = self._gnttab.map_grant_refs(domid, [tx_ref], True)
        self._rings.append(tx)
        rx = self._gnttab.map_grant_refs(domid, [rx_ref], True)
        self._rings.append(rx)
        tx_port = evtchn.bind_interdomain(domid, ports[0])
        rx_port = tx_port if ports[1] == ports[0] else evtchn.bind_interdomain(domid, ports[1])
        queue = NetifQueue(
            self.peer, tx.memory, rx.memory, fd,
            lambda: evtchn.notify(tx_port), lambda: evtchn.notify(rx_port),
        )  # fmt: skip
        self.queues.append(queue)
        self._handlers.setdefault(tx_port, []).append((queue, True))
        self._handlers.setdefault(rx_port, []).append((queue, False))

    def disconnect(self, dev: XenbusDevice) -> None:
        self.vif.set_carrier(False)
        for queue in self.queues:
            self._watch_tap(queue, False)
        if self._evtchn is not None:
            self.reactor.unregister(self._evtchn.fd())
            self._evtchn.close()  # unbinds every port
            self._evtchn = None
        for mapping in self._rings:
            mapping.unmap()
        self._rings.clear()
        if self._gnttab is not None:
            self._gnttab.close()
            self._gnttab = None
        self.queues.clear()
        self._handlers.clear()

    def remove(self, dev: XenbusDevice) -> None:
        self.disconnect(dev)

    # --- data plane -----------------------------------------------------------------
    def _on_event(self) -> None:
        evtchn = self._evtchn
        for _ in range(64):  # a kick storm is bounded per round
            if evtchn is None or (port := evtchn.pending()) is None:
                return
            for queue, is_tx in self._handlers.get(port, []):
                self._kick(queue, tx=is_tx, rx=not is_tx)
            evtchn = self._evtchn
            if evtchn is None:  # the device failed while serving
                return
            evtchn.unmask(port)

    def _kick(self, queue: NetifQueue, *, tx: bool, rx: bool) -> None:
        if queue not in self.queues:
            return  # disconnected meanwhile
        try:
            more_tx = more_rx = False
            for _ in range(MAX_ROUNDS if tx else 0):
                if not (more_tx := queue.service_tx()):
                    break
            for _ in range(MAX_ROUNDS if rx else 0):
                if not (more_rx := queue.service_rx()):
                    break
            self._watch_tap(queue, queue.reading)
        except (RingProducerOverflow, TxFatal) as exc:
            log.warning("%s: %s", self.dev.nodename, exc)
            self.disconnect(self.dev)
            self.dev.fatal(errno.EPROTO, f"{type(exc).__name__}: {exc}")
            return
        if more_tx or more_rx:
            self.reactor.call_soon(lambda: self._kick(queue, tx=more_tx, rx=more_rx))

    def _watch_tap(self, queue: NetifQueue, on: bool) -> None:
        fd = queue.tap_fd
        if on and fd not in self._reading:
            self.reactor.register(fd, lambda: self._kick(queue, tx=False, rx=True))
            self._reading.add(fd)
        elif not on and fd in self._reading:
            self.reactor.unregister(fd)
            self._reading.discard(fd)

    def close(self) -> None:
        self.disconnect(self.dev)
        self.dev.unwatch()
        self.vif.close()
