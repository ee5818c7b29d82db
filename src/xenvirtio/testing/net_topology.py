"""Network namespaces for virtio-net runs: what a Xen host's dom0 has, built from scratch
and removed afterwards, with nothing on the host's own network.

    backend netns  xvb-TAG:  bridge xvbr0 <- device-model TAPs (vifN), veth to the peer
    peer netns     xvp-TAG:  eth0 (veth), an address on the bridge's segment
    guest netns    xvgN-TAG: the guest driver's TAP eth0 with the guest's address

Names carry a per-run tag, so runs never meet. Programs run "inside" a namespace with
`ns_command` (``ip netns exec``).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Sequence

from xenvirtio.netif.netlink import Netlink, create_netns, remove_netns

BRIDGE = "xvbr0"
SUBNET = "10.213.{net}.{host}"
PREFIXLEN = 24


def ns_command(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def ns_run(
    netns: str, argv: Sequence[str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ns_command(netns, argv), capture_output=True, text=True, timeout=timeout, check=False
    )


class NetTopology:
    """``with NetTopology(mtu=9000) as topo: ns = topo.add_guest_ns(1)``."""

    def __init__(self, *, mtu: int = 1500, tag: str | None = None, net: int | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.mtu = mtu
        self.net = net if net is not None else 1 + secrets.randbelow(250)
        self.backend_ns = f"xvb-{self.tag}"
        self.peer_ns = f"xvp-{self.tag}"
        self.namespaces: list[str] = []

    def address(self, host: int) -> str:
        return SUBNET.format(net=self.net, host=host)

    @property
    def peer_address(self) -> str:
        return self.address(2)

    def _new_ns(self, name: str) -> str:
        create_netns(name)
        self.namespaces.append(name)
        with Netlink(name) as nl:
            nl.set_link("lo", up=True)
        return name

    def __enter__(self) -> NetTopology:
        try:
            self._new_ns(self.backend_ns)
            with Netlink(self.backend_ns) as nl:
                nl.add_bridge(BRIDGE, mtu=self.mtu)
                nl.set_link(BRIDGE, up=True)
            self._add_peer()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _add_peer(self) -> None:
        self._new_ns(self.peer_ns)
        with Netlink(self.backend_ns) as nl:
            nl.add_veth("vpeer", "eth0", peer_netns=self.peer_ns)
            nl.set_link("vpeer", master=BRIDGE, mtu=self.mtu, up=True)
        with Netlink(self.peer_ns) as nl:
            nl.set_link("eth0", mtu=self.mtu, up=True)
            nl.add_address("eth0", self.peer_address, PREFIXLEN)

    def add_guest_ns(self, index: int) -> str:
        return self._new_ns(f"xvg{index}-{self.tag}")

    def attach(self, ifname: str) -> None:
        """Enslave a backend-side link (a device model's TAP) to the bridge, up."""
        with Netlink(self.backend_ns) as nl:
            nl.set_link(ifname, mtu=self.mtu, master=BRIDGE, up=True)

    def configure_guest(self, netns: str, ifname: str, host: int) -> str:
        """Give the guest's NIC its address; returns it."""
        address = self.address(host)
        with Netlink(netns) as nl:
            nl.add_address(ifname, address, PREFIXLEN)
            nl.set_link(ifname, up=True)
        return address

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self.namespaces):
            with contextlib.suppress(OSError):
                remove_netns(name)
        self.namespaces.clear()
