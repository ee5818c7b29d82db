"""netfront and netback on an emu host, driven by real programs: ping and iperf3 run in
the guests' namespaces, their traffic crosses the netif rings; the vifs are TAPs on a
bridge in the backend namespace, with a peer namespace on the same bridge."""

from __future__ import annotations

from pathlib import Path

from xenvirtio.devices.netif.vif import VifConfig
from xenvirtio.drivers.netif.frontend import NetfrontConfig
from xenvirtio.hv.xenbus.client import gather
from xenvirtio.netif.netlink import netns_exists
from xenvirtio.spec import netif as N
from xenvirtio.testing.net_tools import iperf3, ping
from xenvirtio.testing.netif_stack import NetifStack
from xenvirtio.testing.tools import require_tool

MTU_FRAME = 1514


def test_two_guests_ping_iperf_gso(netif_run_dir: Path) -> None:
    require_tool("ping")
    require_tool("iperf3")
    with NetifStack(netif_run_dir, guests=2) as stack:
        g1, g2 = stack.guests
        peer = stack.topology
        assert ping(g1.netns, g2.address, count=20).lossless
        assert ping(g2.netns, peer.peer_address, count=10).lossless
        assert iperf3(g1.netns, g2.netns, g2.address, seconds=2).gbits > 0.02
        assert iperf3(g2.netns, peer.peer_ns, peer.peer_address, seconds=2).gbits > 0.02
        s1, s2 = g1.backend.peer.stats, g2.backend.peer.stats  # type: ignore[union-attr]
        # TSO passthrough: the guest's TCP crossed the tx ring as GSO packets (extra
        # info + up to 17 slots) and reached the other guest's rx ring as GSO packets.
        assert s1.tx_gso > 0 and s1.tx_average > 4 * MTU_FRAME
        assert s2.rx_gso > 0 and s2.rx_bytes / s2.rx_packets > MTU_FRAME
        assert not s1.tx_dropped and not s2.tx_dropped and not s2.rx_dropped
        assert g2.front.queues[0].rx.counters.dropped == 0
        fe = gather(g1.front.xs, g1.front.nodename, N.KEY_EVENT_CHANNEL_TX, N.KEY_REQUEST_RX_COPY)
        assert fe[N.KEY_REQUEST_RX_COPY] == "1"  # split event channels in use
        namespaces = list(peer.namespaces)
        assert all(netns_exists(ns) for ns in namespaces)
    assert not any(netns_exists(ns) for ns in namespaces)  # removed on close


def test_multi_queue_single_event_channel_no_offloads(netif_run_dir: Path) -> None:
    require_tool("iperf3")
    front = NetfrontConfig(num_queues=2, split_event_channels=False, gso=False)
    back = VifConfig(max_queues=4)
    with NetifStack(netif_run_dir, guests=2, front=front, back=back) as stack:
        g1, g2 = stack.guests
        keys = gather(g1.front.xs, g1.front.nodename, N.KEY_MULTI_QUEUE_NUM_QUEUES,
                      f"queue-1/{N.KEY_TX_RING_REF}", f"queue-1/{N.KEY_EVENT_CHANNEL}")  # fmt: skip
        assert keys[N.KEY_MULTI_QUEUE_NUM_QUEUES] == "2"
        assert len(g1.backend.queues) == 2
        assert ping(g1.netns, g2.address, count=10).lossless
        assert iperf3(g1.netns, g2.netns, g2.address, seconds=2, streams=4).gbits > 0.01
        s1, s2 = g1.backend.peer.stats, g2.backend.peer.stats  # type: ignore[union-attr]
        # Without feature-gso-* from the frontend nothing larger than the MTU crosses.
        assert s2.rx_gso == 0 and s2.rx_packets > 100
        assert s2.rx_bytes / s2.rx_packets <= MTU_FRAME
        assert s1.tx_packets > 100
        assert sum(q.rx.counters.packets > 0 for q in g2.front.queues) >= 1
