"""Guests with virtio-net NICs on one bridge, driven by real programs: ping and iperf3
run inside the guests' namespaces, their traffic crosses the virtqueues.

Each stack makes its own namespaces (backend with the bridge, peer, one per guest) with
per-run names and removes them when it closes."""

from __future__ import annotations

import time

import pytest

from xenvirtio.netif.netlink import Netlink, netns_exists
from xenvirtio.spec import virtio_net as N
from xenvirtio.testing.net_stack import GUEST_IFNAME, NetStack
from xenvirtio.testing.net_tools import iperf3, ping
from xenvirtio.testing.tools import require_tool


def wait_for(predicate: object, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def carrier(netns: str) -> bool:
    with Netlink(netns) as nl:
        return nl.link(GUEST_IFNAME).carrier


@pytest.mark.parametrize(
    ("transport", "packed", "iperf_to_peer"),
    [("pci", False, False), ("mmio", True, True)],
    ids=["pci-split", "mmio-packed"],
)
def test_guests_ping_and_iperf(transport: str, packed: bool, iperf_to_peer: bool) -> None:
    require_tool("ping")
    require_tool("iperf3")
    with NetStack(guests=2, transport=transport, packed=packed) as stack:  # type: ignore[arg-type]
        g1, g2 = stack.guests
        peer = stack.topology
        assert ping(g1.netns, g2.address, count=20).lossless
        assert ping(g2.netns, peer.peer_address, count=10).lossless
        if iperf_to_peer:
            result = iperf3(g1.netns, peer.peer_ns, peer.peer_address, seconds=2)
        else:
            result = iperf3(g1.netns, g2.netns, g2.address, seconds=2)
        assert result.gbits > 0.05
        stats = g1.device.stats
        # TSO passthrough: the guest's TCP reached the device as GSO super-frames.
        assert stats.tx_bytes / stats.tx_frames > 4 * 1514
        assert not stats.tx_dropped and not g2.device.stats.tx_dropped
        namespaces = list(peer.namespaces)
        assert all(netns_exists(ns) for ns in namespaces)
    assert not any(netns_exists(ns) for ns in namespaces)  # removed on close


@pytest.mark.parametrize("mrg", [True, False], ids=["mrg-rxbuf", "big-buffers"])
def test_mtu_9000(mrg: bool) -> None:
    require_tool("ping")
    exclude = 0 if mrg else 1 << N.VIRTIO_NET_F_MRG_RXBUF
    with NetStack(guests=2, mtu=9000, exclude=exclude) as stack:
        g1, g2 = stack.guests
        assert g1.driver.mtu == 9000 and g1.driver.has(N.VIRTIO_NET_F_MRG_RXBUF) == mrg
        with Netlink(g1.netns) as nl:
            assert nl.link(GUEST_IFNAME).mtu == 9000  # taken from the config space
        jumbo = ping(g1.netns, g2.address, count=10, size=8972, dont_fragment=True)
        assert jumbo.lossless, jumbo.output
        assert ping(g2.netns, stack.topology.peer_address, size=8972, dont_fragment=True).lossless
        too_big = ping(g1.netns, g2.address, count=2, size=9000, dont_fragment=True, wait=0.5)
        assert too_big.received == 0


def test_link_down_is_seen_in_the_guest() -> None:
    require_tool("ping")
    with NetStack(guests=2) as stack:
        g1, g2 = stack.guests
        assert carrier(g1.netns) and ping(g1.netns, g2.address, count=3).lossless
        stack.call(g1.device.set_link, False)
        assert wait_for(lambda: not carrier(g1.netns))  # STATUS -> guest TAP carrier
        assert not g1.driver.link_up
        assert ping(g1.netns, g2.address, count=3, wait=0.5).received == 0
        stack.call(g1.device.set_link, True)
        assert wait_for(lambda: carrier(g1.netns))
        assert wait_for(lambda: ping(g1.netns, g2.address, count=3).lossless, timeout=10)


def test_mac_filter_and_control_queue() -> None:
    require_tool("ping")
    with NetStack(guests=2) as stack:
        g1, g2 = stack.guests
        with Netlink(g1.netns) as nl:
            assert nl.link(GUEST_IFNAME).mac == ":".join(f"{b:02x}" for b in g1.device.mac)
        # The driver turned promiscuous mode off and all-multicast on.
        assert not g1.device.filter.promisc and g1.device.filter.allmulti
        assert g1.device.stats.ctrl_ok >= 2
        new = b"\x02\x58\x56\xaa\xbb\xcc"
        stack.run(g1.driver.set_mac(new))
        assert g1.device.mac == new and g1.device.config.read(N.CFG_MAC, 6) == new
        assert ping(g2.netns, g1.address, count=5).lossless  # ARP learns the new address
        assert stack.call(g1.device.announce)
        assert wait_for(lambda: not g1.device.announce_pending)  # acked on the ctrl queue
        assert g1.driver.announces == 1


def test_multiqueue_pairs() -> None:
    require_tool("ping")
    require_tool("iperf3")
    with NetStack(guests=2, pairs=2) as stack:
        g1, g2 = stack.guests
        assert g1.device.active_pairs == 2 and g1.device.rx[1].active
        assert len(g1.driver.tx) == 2
        result = iperf3(g1.netns, g2.netns, g2.address, seconds=1, streams=4)
        assert result.gbits > 0.05
        assert ping(g1.netns, g2.address, count=5).lossless
