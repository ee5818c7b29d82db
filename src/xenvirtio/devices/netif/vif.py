"""The backend's network interface: a TAP ``vif<domid>.<devid>`` on a bridge.

What Xen's ``vif-bridge`` hotplug script does for a netback vif: the interface is made
when the backend device is, enslaved to the bridge, and brought up; its carrier is on
only while the frontend is connected. It is a multi-queue TAP with a queue per netif
queue offered; queues the frontend does not use are detached. ``TUNSETOFFLOAD`` says
what the frontend accepts on receive (partial checksums, TSO).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from xenvirtio.netif.netlink import Netlink
from xenvirtio.netif.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, Tap

VIF_MAC = "fe:ff:ff:ff:ff:ff"  # as Xen's hotplug scripts set every vif


@dataclass(frozen=True)
class VifConfig:
    """Where the vif lives and what netback offers on it."""

    netns: str | None = None
    bridge: str | None = None
    mtu: int = 1500
    max_queues: int = 4
    gso: bool = True
    split_event_channels: bool = True
    multicast_control: bool = True


def vif_name(domid: int, devid: int) -> str:
    return f"vif{domid}.{devid}"


def rx_offloads(csum: bool, gso_tcpv4: bool, gso_tcpv6: bool) -> int:
    """TUNSETOFFLOAD for the vif: the kernel refuses TSO without CSUM."""
    if not csum:
        return 0
    return TUN_F_CSUM | (TUN_F_TSO4 if gso_tcpv4 else 0) | (TUN_F_TSO6 if gso_tcpv6 else 0)


class Vif:
    """The TAP of one vif, on its bridge, carrier off."""

    def __init__(self, name: str, config: VifConfig) -> None:
        self.name = name
        self.config = config
        self.tap = Tap.open(name, queues=config.max_queues, netns=config.netns)
        try:
            self.tap.set_carrier(False)
            with Netlink(config.netns) as nl:
                nl.set_link(name, mac=VIF_MAC, mtu=config.mtu, master=config.bridge, up=True)
        except BaseException:
            self.tap.close()
            raise

    def use_queues(self, n: int, offloads: int) -> list[int]:
        """Attach the first ``n`` queues (detach the rest); their descriptors."""
        for q in range(self.tap.queues):
            self.tap.set_queue_enabled(q, q < n)
        self.tap.set_offload(offloads)
        return self.tap.fds[:n]

    def set_carrier(self, on: bool) -> None:
        with contextlib.suppress(OSError):
            self.tap.set_carrier(on)

    def close(self) -> None:
        self.tap.close()
