"""netfront: the guest's netif driver; its NIC is a TAP in the guest's network namespace.

Handshake, as Linux's xen-netfront runs it: once the backend is InitWait the frontend
reads ``multi-queue-max-queues``, ``feature-split-event-channels``, ``feature-sg``,
``feature-gso-tcpv4/6``, ``feature-ipv6-csum-offload`` and ``feature-rx-copy``
(mandatory); sets up each queue's rings, buffers and event channel(s) (under
``queue-<q>/`` when ``multi-queue-num-queues`` > 1), writes ``request-rx-copy``,
``feature-rx-notify``, ``feature-sg``, ``feature-gso-tcpv4/6``,
``feature-no-csum-offload``, ``feature-ipv6-csum-offload`` and goes Initialised. When
the backend is Connected it posts the receive buffers, sets the TAP's offloads to what
the backend accepts, turns the carrier on and goes Connected.

Single-threaded: every method runs on the event loop `start` was awaited on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from xenvirtio.drivers.net.nic import TapNic
from xenvirtio.drivers.netif.queue import FrontQueue
from xenvirtio.hv.api import Guest
from xenvirtio.hv.xenbus.client import scatter
from xenvirtio.hv.xenbus.device import XenbusDevice, XenbusDriver
from xenvirtio.hv.xenbus.ops import read_optional
from xenvirtio.hv.xenbus.paths import FrontendPath
from xenvirtio.hv.xenbus.state import Role
from xenvirtio.hv.xenbus.values import parse_uint
from xenvirtio.netif.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6
from xenvirtio.spec import netif as N
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.store import ReactorStore

log = logging.getLogger("xenvirtio.netif.front")


@dataclass(frozen=True)
class NetfrontConfig:
    """What the frontend asks for (each capped by the backend's offer)."""

    num_queues: int = 1
    split_event_channels: bool = True
    sg: bool = True
    gso: bool = True
    csum: bool = True
    multicast_control: bool = False
    ifname: str = "eth0"
    netns: str | None = None
    mtu: int = 1500


class NetifFrontend(XenbusDriver):
    """Device ``devid`` of type ``vif`` of ``guest``. ``await start()`` first."""

    def __init__(self, guest: Guest, devid: int, config: NetfrontConfig | None = None) -> None:
        self.guest = guest
        self.config = config or NetfrontConfig()
        self.nodename = str(FrontendPath(guest.domid, "vif", devid))
        self.reactor = Reactor()
        store = guest.hypervisor.store
        assert store is not None
        self.xs = ReactorStore(store, self.reactor)
        self.dev = XenbusDevice.probe(self.xs, Role.FRONTEND, self.nodename, self)
        self.reactor.watch_handler = self._on_watch
        self.nic: TapNic | None = None
        self.queues: list[FrontQueue] = []
        self.offer: dict[str, int] = {}
        self._connected: asyncio.Future[None] | None = None
        self.closing = False

    def _on_watch(self, path: str, token: str) -> None:
        self.dev.handle_watch_event(path, token)

    async def start(self, timeout: float = 10.0) -> None:
        """Attach to the running loop, run the handshake, return once Connected."""
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self.reactor.attach(loop)
        self.dev.watch()
        if self.dev.state is not XenbusState.INITIALISING:
            self.dev.switch_state(XenbusState.INITIALISING)
        await asyncio.wait_for(asyncio.shield(self._connected), timeout)

    # --- XenbusDriver hooks ---------------------------------------------------------
    def setup(self, dev: XenbusDevice) -> None:
        """``talk_to_netback``: queues, rings, ports and keys, before Initialised."""
        self.offer = {k: self._be_uint(dev.otherend, k) for k in _OFFER_KEYS}
        if not self.offer[N.KEY_FEATURE_RX_COPY]:
            raise ValueError("backend does not support rx-copy")
        c = self.config
        nq = max(1, min(c.num_queues, self.offer[N.KEY_MULTI_QUEUE_MAX_QUEUES] or 1))
        split = c.split_event_channels and bool(self.offer[N.KEY_FEATURE_SPLIT_EVENT_CHANNELS])
        self._drop_queues()
        nic = self._nic(nq)
        keys: dict[str, str | int | bytes] = {
            N.KEY_REQUEST_RX_COPY: 1,
            N.KEY_FEATURE_RX_NOTIFY: 1,
            N.KEY_FEATURE_SG: int(c.sg),
            N.KEY_FEATURE_GSO_TCPV4: int(c.gso and c.sg),
            N.KEY_FEATURE_GSO_TCPV6: int(c.gso and c.sg),
            N.KEY_FEATURE_NO_CSUM_OFFLOAD: int(not c.csum),
            N.KEY_FEATURE_IPV6_CSUM_OFFLOAD: int(c.csum),
            N.KEY_REQUEST_MULTICAST_CONTROL: int(c.multicast_control),
        }
        if nq > 1:
            keys[N.KEY_MULTI_QUEUE_NUM_QUEUES] = nq
        for q in range(nq):
            queue = FrontQueue(self.guest, dev.otherend_id, self.reactor, nic.fds[q],
                               split=split, gso=c.gso and c.sg)  # fmt: skip
            self.queues.append(queue)
            prefix = "" if nq == 1 else f"queue-{q}/"
            keys.update({prefix + k: v for k, v in queue.keys().items()})
        scatter(self.xs, self.nodename, keys)

    def _nic(self, nq: int) -> TapNic:
        if self.nic is not None and len(self.nic.fds) != nq:
            self.nic.close()
            self.nic = None
        if self.nic is None:
            self.nic = TapNic(self.config.ifname, self.config.netns, queues=nq)
            self.nic.set_carrier(False)
            self.nic.set_mtu(self.config.mtu)
            mac = read_optional(self.xs, f"{self.nodename}/{N.KEY_MAC}")
            if mac is not None:
                self.nic.set_mac(mac.decode("ascii"))
        return self.nic

    def connect(self, dev: XenbusDevice) -> None:
        """``xennet_connect``: TAP offloads from the backend's features, buffers, carrier."""
        assert self.nic is not None
        o, c = self.offer, self.config
        tso = c.sg and bool(o[N.KEY_FEATURE_SG])
        flags = 0
        if c.csum and o[N.KEY_FEATURE_IPV6_CSUM_OFFLOAD]:
            flags = TUN_F_CSUM
            flags |= TUN_F_TSO4 if tso and o[N.KEY_FEATURE_GSO_TCPV4] else 0
            flags |= TUN_F_TSO6 if tso and o[N.KEY_FEATURE_GSO_TCPV6] else 0
        self.nic.set_offload(flags)
        for queue in self.queues:
            queue.start()
        self.nic.set_carrier(True)
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(None)

    def disconnect(self, dev: XenbusDevice) -> None:
        if self.nic is not None:
            self.nic.set_carrier(False)
        if self._connected is None or self._connected.done():
            self._connected = asyncio.get_running_loop().create_future()
        self._drop_queues()

    def state_changed(self, dev: XenbusDevice, old: XenbusState, new: XenbusState) -> None:
        if new is XenbusState.CLOSED and not self.closing:
            self.reactor.call_soon(lambda: dev.switch_state(XenbusState.INITIALISING))

    def _drop_queues(self) -> None:
        for queue in self.queues:
            queue.close()
        self.queues.clear()

    def _be_uint(self, be: str, key: str) -> int:
        raw = read_optional(self.xs, f"{be}/{key}")
        return 0 if raw is None else parse_uint(raw, key)

    def close(self) -> None:
        """Close the device (frontend Closed); release queues and the TAP."""
        self.closing = True
        try:
            if self.dev.state is not XenbusState.CLOSED:
                self.dev.switch_state(XenbusState.CLOSED)
        except Exception as exc:  # the backend may be gone already
            log.debug("close: %s", exc)
        self.dev.unwatch()
        self._drop_queues()
        self.reactor.close()
        if self.nic is not None:
            self.nic.close()
            self.nic = None


_OFFER_KEYS = (
    N.KEY_MULTI_QUEUE_MAX_QUEUES,
    N.KEY_FEATURE_SPLIT_EVENT_CHANNELS,
    N.KEY_FEATURE_SG,
    N.KEY_FEATURE_GSO_TCPV4,
    N.KEY_FEATURE_GSO_TCPV6,
    N.KEY_FEATURE_IPV6_CSUM_OFFLOAD,
    N.KEY_FEATURE_RX_COPY,
)
