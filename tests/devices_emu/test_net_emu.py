"""virtio-net on every emu transport: device models in dom0 on TAPs enslaved to a bridge
in a backend namespace, each guest's `VirtioNetDriver` in its own domain process with
its NIC as a TAP in the guest's own namespace; ping and iperf3 run in those namespaces,
so their traffic crosses the virtqueues of XenBus (grant DMA), virtio-pci or virtio-mmio
(through ioreqs)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from emu_dev_support import DeviceHost, GuestDomain, guest_domain

from xenvirtio.devices.net import NetConfig, TapBackend, VirtioNetDevice
from xenvirtio.hv.api import Hypervisor
from xenvirtio.netif.netlink import Netlink, netns_exists
from xenvirtio.netif.tap import Tap
from xenvirtio.spec import virtio as S
from xenvirtio.testing.net_tools import iperf3, ping
from xenvirtio.testing.net_topology import NetTopology
from xenvirtio.testing.tools import require_tool

IFNAME = "eth0"
DMA_PAGES = 1024  # rings, 128 x 8 KiB receive and 32 x 64 KiB transmit buffers


@dataclass(eq=False)
class NetGuest:
    domain: GuestDomain
    netns: str
    address: str
    device: VirtioNetDevice
    features: int


@contextlib.contextmanager
def net_guests(
    hv: Hypervisor, host: DeviceHost, topo: NetTopology, count: int, ring: str
) -> Iterator[list[NetGuest]]:
    """``count`` guests on the bridge of ``topo``, addresses configured."""
    vifs: list[Tap] = []
    devices: list[VirtioNetDevice] = []
    with contextlib.ExitStack() as stack:
        try:
            guests = []
            for index in range(1, count + 1):
                vif, device = host.call(_backend_nic, host, topo, index)
                vifs.append(vif)
                devices.append(device)
                netns = topo.add_guest_ns(index)
                args = {"device": "net", "ring": ring, "netns": netns, "dma_pages": DMA_PAGES}
                name = f"net{index}-{host.transport}"
                domain = stack.enter_context(guest_domain(hv, host, device, args, name=name))
                ready = domain.wait_report("ready")
                assert ready["mtu"] == topo.mtu  # from the config space, over the transport
                address = topo.configure_guest(netns, IFNAME, 10 + index)
                guests.append(NetGuest(domain, netns, address, device, ready["features"]))
            yield guests
            for guest in guests:  # the drivers reset their devices and end cleanly
                assert guest.domain.stop()["tx_frames"] > 0
        finally:
            stack.close()
            host.unplug_all()
            for device, vif in zip(devices, vifs, strict=True):
                host.call(device.reset)
                host.call(vif.close)


def _backend_nic(host: DeviceHost, topo: NetTopology, index: int) -> tuple[Tap, VirtioNetDevice]:
    """On the device loop: vifN in the backend namespace, on the bridge, and its model."""
    vif = Tap.open(f"vif{index}", queues=1, netns=topo.backend_ns)
    try:
        topo.attach(vif.name)
        mac = bytes((0x02, 0x58, 0x56, int(topo.tag[:2], 16), 0x10, index))
        device = VirtioNetDevice(TapBackend(vif), host.loop, NetConfig(mac=mac, mtu=topo.mtu))
    except BaseException:
        vif.close()
        raise
    return vif, device


@contextlib.contextmanager
def device_host(run_dir: Path, transport: str) -> Iterator[DeviceHost]:
    host = DeviceHost(run_dir, transport)
    try:
        yield host
    finally:
        host.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def carrier(netns: str) -> bool:
    with Netlink(netns) as nl:
        return bool(nl.link(IFNAME).carrier)


@pytest.mark.parametrize(
    ("transport", "ring"),
    [("xenbus", "split"), ("xenbus", "packed"), ("pci-msix", "split"), ("mmio", "packed")],
)
def test_guests_ping_and_iperf(hv: Hypervisor, run_dir: Path, transport: str, ring: str) -> None:
    require_tool("ping")
    require_tool("iperf3")
    with (
        device_host(run_dir, transport) as host,
        NetTopology() as topo,
        net_guests(hv, host, topo, 2, ring) as (g1, g2),
    ):
        assert bool(g1.features >> S.VIRTIO_F_RING_PACKED & 1) == (ring == "packed")
        assert ping(g1.netns, g2.address, count=20).lossless
        assert ping(g2.netns, topo.peer_address, count=10).lossless
        between = iperf3(g1.netns, g2.netns, g2.address, seconds=2)
        to_peer = iperf3(g2.netns, topo.peer_ns, topo.peer_address, seconds=2, port=5202)
        assert between.gbits > 0.01 and to_peer.gbits > 0.01
        stats = g1.device.stats
        # TSO passthrough: the guest's TCP reached the device as GSO super-frames.
        assert stats.tx_bytes / stats.tx_frames > 4 * 1514
        assert not stats.tx_dropped and not g2.device.stats.tx_dropped
        namespaces = list(topo.namespaces)
    assert namespaces and not any(netns_exists(ns) for ns in namespaces)


def test_mtu_9000_over_xenbus(hv: Hypervisor, run_dir: Path) -> None:
    require_tool("ping")
    with (
        device_host(run_dir, "xenbus") as host,
        NetTopology(mtu=9000) as topo,
        net_guests(hv, host, topo, 2, "packed") as (g1, g2),
    ):
        with Netlink(g1.netns) as nl:
            assert nl.link(IFNAME).mtu == 9000
        jumbo = ping(g1.netns, g2.address, count=10, size=8972, dont_fragment=True)
        assert jumbo.lossless, jumbo.output
        assert ping(g2.netns, topo.peer_address, size=8972, dont_fragment=True).lossless
        too_big = ping(g1.netns, g2.address, count=2, size=9000, dont_fragment=True, wait=0.5)
        assert too_big.received == 0


def test_link_down_is_carrier_off_in_the_guest(hv: Hypervisor, run_dir: Path) -> None:
    require_tool("ping")
    with (
        device_host(run_dir, "pci-msix") as host,
        NetTopology() as topo,
        net_guests(hv, host, topo, 1, "split") as (g1,),
    ):
        assert carrier(g1.netns) and ping(g1.netns, topo.peer_address, count=3).lossless
        host.call(g1.device.set_link, False)  # STATUS, then a configuration interrupt
        assert wait_for(lambda: not carrier(g1.netns))
        assert ping(g1.netns, topo.peer_address, count=2, wait=0.5).received == 0
        host.call(g1.device.set_link, True)
        assert wait_for(lambda: carrier(g1.netns))
        assert wait_for(lambda: ping(g1.netns, topo.peer_address, count=3).lossless, 10)
