"""rtnetlink through pyroute2: network namespaces, bridges, veth pairs, link settings and
addresses, the steps Xen's ``vif-bridge`` hotplug script does with ``ip``/``brctl``.

`Netlink` holds one rtnetlink socket opened inside one namespace (None: the caller's);
every method names links by interface name. pyroute2 runs its own asyncio loop, so the
socket lives on a private thread and every call is handed to it: `Netlink` works the
same from plain code and from inside a running event loop (it blocks the caller for the
few milliseconds a request takes). Namespace creation and removal are
functions (they bind-mount ``/run/netns/NAME`` as ``ip netns add`` does, so
``ip netns exec NAME ...`` runs programs inside).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as _netns

IFF_UP = 0x1
R = TypeVar("R")


@dataclass(frozen=True)
class LinkInfo:
    """What a link looks like right now."""

    index: int
    name: str
    mtu: int
    mac: str
    up: bool  # administratively (IFF_UP)
    carrier: bool
    operstate: str
    master: int  # bridge index, 0 when not enslaved


def create_netns(name: str) -> None:
    """Create network namespace ``name`` (``ip netns add``); fails if it exists."""
    if netns_exists(name):
        raise FileExistsError(f"network namespace {name!r} exists")
    _netns.create(name)


def remove_netns(name: str) -> None:
    """Remove ``name`` if it exists; links inside go with it once nothing holds them."""
    if netns_exists(name):
        _netns.remove(name)


def netns_exists(name: str) -> bool:
    return name in _netns.listnetns()


class Netlink:
    """``with Netlink("ns") as nl: nl.add_bridge("br0"); nl.set_link("br0", up=True)``."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        try:
            self._ipr: Any = self._thread.submit(
                lambda: IPRoute(netns=netns) if netns else IPRoute()
            ).result()
        except BaseException:
            self._thread.shutdown()
            raise

    def _call(self, fn: Callable[[], R]) -> R:
        return self._thread.submit(fn).result()

    def close(self) -> None:
        try:
            self._call(self._ipr.close)
        finally:
            self._thread.shutdown()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- lookups
    def index(self, ifname: str) -> int:
        found = self._call(lambda: self._ipr.link_lookup(ifname=ifname))
        if not found:
            raise LookupError(f"no link {ifname!r} in netns {self.netns!r}")
        return int(found[0])

    def exists(self, ifname: str) -> bool:
        return bool(self._call(lambda: self._ipr.link_lookup(ifname=ifname)))

    def link(self, ifname: str) -> LinkInfo:
        index = self.index(ifname)
        msg = self._call(lambda: self._ipr.get_links(index))[0]
        return LinkInfo(
            index=int(msg["index"]),
            name=str(msg.get("ifname")),
            mtu=int(msg.get("mtu")),
            mac=str(msg.get("address")),
            up=bool(msg["flags"] & IFF_UP),
            carrier=bool(msg.get("carrier")),
            operstate=str(msg.get("operstate")),
            master=int(msg.get("master") or 0),
        )

    def addresses(self, ifname: str) -> list[str]:
        """IPv4 and IPv6 addresses of a link."""
        index = self.index(ifname)
        return [str(a.get("address")) for a in self._call(lambda: self._ipr.get_addr(index=index))]

    # ---------------------------------------------------------------- changes
    def add_bridge(self, name: str, *, mtu: int | None = None) -> None:
        self._call(lambda: self._ipr.link("add", ifname=name, kind="bridge"))
        if mtu is not None:
            self.set_link(name, mtu=mtu)

    def add_veth(self, name: str, peer: str, *, peer_netns: str | None = None) -> None:
        """A veth pair; the peer end goes straight into ``peer_netns``."""
        spec: dict[str, Any] = {"ifname": peer}
        if peer_netns is not None:
            spec["net_ns_fd"] = peer_netns
        self._call(lambda: self._ipr.link("add", ifname=name, kind="veth", peer=spec))

    def set_link(
        self,
        ifname: str,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        master: str | None = None,
    ) -> None:
        """Change what is given: admin state, MTU, MAC, bridge (``master``)."""
        args: dict[str, Any] = {}
        if mtu is not None:
            args["mtu"] = mtu
        if mac is not None:
            args["address"] = mac
        if master is not None:
            args["master"] = self.index(master)
        if up is not None:
            args["state"] = "up" if up else "down"
        if args:
            index = self.index(ifname)
            self._call(lambda: self._ipr.link("set", index=index, **args))

    def move_to_netns(self, ifname: str, netns: str) -> None:
        index = self.index(ifname)
        self._call(lambda: self._ipr.link("set", index=index, net_ns_fd=netns))

    def add_address(self, ifname: str, address: str, prefixlen: int) -> None:
        index = self.index(ifname)
        self._call(lambda: self._ipr.addr("add", index=index, address=address, prefixlen=prefixlen))

    def delete_link(self, ifname: str) -> None:
        if self.exists(ifname):
            index = self.index(ifname)
            self._call(lambda: self._ipr.link("del", index=index))
