"""What the guest kernel runs for a classic PV disk or NIC (``specification`` "xen").

- disk: `BlkifFrontend` on ``device/vbd/<devid>``, served as an NBD export on
  ``<name>.nbd`` (the same place as a virtio disk's);
- net: `NetifFrontend` on ``device/vif/<devid>``, its NIC a TAP ``ifname`` in the
  domain's network namespace with the MAC the toolstack wrote and the spec's address.

A `ClassicService` is what `guest_services.Service` is for virtio devices: it knows
how to close what it brought up; ``ring`` is the device's ring protocol.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass

from xenvirtio.drivers.blkif.frontend import BlkfrontConfig, BlkifFrontend
from xenvirtio.drivers.netif.frontend import NetfrontConfig, NetifFrontend
from xenvirtio.hv.api.guest import Guest
from xenvirtio.nbd.server import NbdServer
from xenvirtio.netif.netlink import Netlink
from xenvirtio.runtime.guest_services import GuestContext
from xenvirtio.runtime.network import guest_netns
from xenvirtio.runtime.specs import DeviceSpec, DiskSpec, NetSpec

CONNECT_TIMEOUT = 30.0  # seconds for the backend to reach Connected


@dataclass
class ClassicService:
    spec: DeviceSpec
    front: BlkifFrontend | NetifFrontend
    server: NbdServer | None = None

    @property
    def ring(self) -> str:
        return "blkif" if isinstance(self.front, BlkifFrontend) else "netif"

    @property
    def reconnects(self) -> int:
        return self.front.reconnects if isinstance(self.front, BlkifFrontend) else 0

    async def close(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.close()
        with contextlib.suppress(Exception):
            self.front.close()


async def start_classic(spec: DeviceSpec, guest: Guest, ctx: GuestContext) -> ClassicService:
    """Connect the frontend for ``spec`` and serve what it gives the host."""
    if isinstance(spec, DiskSpec):
        return await _blkfront(spec, guest, ctx)
    if isinstance(spec, NetSpec):
        return await _netfront(spec, guest, ctx)
    raise ValueError(f"a {spec.kind} has no classic frontend")


async def _blkfront(spec: DiskSpec, guest: Guest, ctx: GuestContext) -> ClassicService:
    front = BlkifFrontend(guest, spec.devid, BlkfrontConfig(num_queues=spec.queues))
    service = ClassicService(spec, front)
    try:
        await front.start(timeout=CONNECT_TIMEOUT)
        service.server = NbdServer(front, export_name=spec.vdev, description="blkif disk")
        await service.server.start_unix(ctx.domain.nbd_socket(spec.name))
    except BaseException:
        await service.close()
        raise
    return service


async def _netfront(spec: NetSpec, guest: Guest, ctx: GuestContext) -> ClassicService:
    netns = guest_netns(ctx.domain.run_dir, ctx.domain.domid)
    config = NetfrontConfig(num_queues=spec.queues, ifname=spec.ifname, netns=netns,
                            mtu=spec.mtu)  # fmt: skip
    front = NetifFrontend(guest, spec.devid, config)
    service = ClassicService(spec, front)
    try:
        await front.start(timeout=CONNECT_TIMEOUT)
        with Netlink(netns) as nl:
            if spec.ip:
                address = ipaddress.ip_interface(spec.ip)
                nl.add_address(spec.ifname, str(address.ip), address.network.prefixlen)
            nl.set_link(spec.ifname, up=True)
    except BaseException:
        await service.close()
        raise
    return service
