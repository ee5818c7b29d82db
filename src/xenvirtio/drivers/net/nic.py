"""The guest's network interface as the driver drives it: the port `GuestNic`, and
`TapNic`, a TAP device inside the guest's own network namespace.

The guest's programs (ping, iperf3, anything run with ``ip netns exec GUEST``) use that
TAP as their NIC. What they send, the driver reads from the TAP and puts on transmitq;
what the device delivers on receiveq, the driver writes to the TAP. The TAP has
IFF_VNET_HDR with a 12-byte header, so offloads cross it unchanged.
"""

from __future__ import annotations

from typing import Protocol

from xenvirtio.netif.netlink import Netlink
from xenvirtio.netif.tap import Tap


class GuestNic(Protocol):
    """What the driver needs from the guest's side of the NIC."""

    @property
    def fds(self) -> list[int]:
        """One non-blocking descriptor per queue (frames with their vnet header)."""
        ...

    def set_offload(self, flags: int) -> None:
        """TUN_F_* offloads the driver accepts from the guest's stack."""
        ...

    def set_carrier(self, on: bool) -> None: ...

    def set_mac(self, mac: str) -> None: ...

    def set_mtu(self, mtu: int) -> None: ...

    def close(self) -> None: ...


class TapNic:
    """``name`` in network namespace ``netns`` (None: the caller's), ``queues`` queues;
    brought up at once."""

    def __init__(self, name: str, netns: str | None, *, queues: int = 1) -> None:
        self.name, self.netns = name, netns
        self.tap = Tap.open(name, queues=queues, netns=netns)
        try:
            self._netlink = Netlink(netns)
            self._netlink.set_link(name, up=True)
        except BaseException:
            self.tap.close()
            raise

    @property
    def fds(self) -> list[int]:
        return self.tap.fds

    def set_offload(self, flags: int) -> None:
        self.tap.set_offload(flags)

    def set_carrier(self, on: bool) -> None:
        self.tap.set_carrier(on)

    def set_mac(self, mac: str) -> None:
        self._netlink.set_link(self.name, mac=mac)

    def set_mtu(self, mtu: int) -> None:
        self._netlink.set_link(self.name, mtu=mtu)

    def close(self) -> None:
        self.tap.close()
        self._netlink.close()
