"""Where each device lands in its guest, and the toolstack's XenStore part.

Placement is a pure function of the spec, so the backend (which serves the device
there), the guest (which looks for it there) and a restarted backend all agree:

- xenbus: ``/local/domain/<domid>/device/virtio/<devid>``, its backend directory
  ``/local/domain/<be>/backend/virtio/<domid>/<devid>``;
- pci: function 0 of slot ``4 + devid`` on bus 0 (slots 0..3 are the platform's);
- mmio: the window at ``0x02000000 + devid * 0x1000``, interrupt SPI (GSI)
  ``33 + devid`` (libxl's Arm layout).

`plug` writes a XenBus device's two directories as libxl does (``create_device``);
`unplug` removes them. A device plugged into a running guest (``announce=True``) also
carries its spec in the frontend directory (`layout.HOTPLUG_SPEC_KEY`). pci and mmio
devices need no XenStore nodes: their device model claims the slot or window through
its ioreq server when it starts. A classic PV disk or NIC (``specification`` "xen")
is a ``vbd`` or ``vif`` device, with the keys xl writes for one (`classic_entries`).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Final

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.xenbus.client import create_device, remove_device
from xenvirtio.hv.xenbus.paths import BackendPath, FrontendPath
from xenvirtio.runtime.layout import HOTPLUG_SPEC_KEY
from xenvirtio.runtime.specs import DeviceSpec, DiskSpec, NetSpec, spec_to_json
from xenvirtio.spec import netif as N
from xenvirtio.spec.pci import pci_bdf
from xenvirtio.transport.ioreq.guest_bus import (
    GUEST_VIRTIO_MMIO_BASE,
    GUEST_VIRTIO_MMIO_SPI_FIRST,
)
from xenvirtio.transport.xenbus.keys import DEVTYPE

PCI_FIRST_SLOT: Final = 4
MMIO_STRIDE: Final = 0x1000


@dataclass(frozen=True)
class MmioPlace:
    base: int
    gsi: int


def pci_slot(spec: DeviceSpec) -> int:
    return PCI_FIRST_SLOT + spec.devid


def pci_place(spec: DeviceSpec) -> int:
    """The guest's bdf of a pci device (bus 0, function 0)."""
    return pci_bdf(0, pci_slot(spec), 0)


def mmio_place(spec: DeviceSpec) -> MmioPlace:
    return MmioPlace(GUEST_VIRTIO_MMIO_BASE + spec.devid * MMIO_STRIDE,
                     GUEST_VIRTIO_MMIO_SPI_FIRST + spec.devid)  # fmt: skip


def xenbus_place(domid: int, spec: DeviceSpec) -> tuple[FrontendPath, BackendPath]:
    devtype = spec.xen_devtype or DEVTYPE
    fe = FrontendPath(domid, devtype, spec.devid)
    return fe, BackendPath(spec.backend_domid, devtype, domid, spec.devid)


Entries = dict[str, str | int | bytes]


def classic_entries(spec: DeviceSpec) -> tuple[Entries, Entries]:
    """(backend, frontend) keys of a vbd or vif beyond XenBus's own, as xl writes them."""
    if isinstance(spec, DiskSpec):
        mode = "r" if spec.read_only else "w"
        return ({"params": spec.image, "type": "phy", "mode": mode, "dev": spec.vdev,
                 "device-type": "disk", "removable": 0, "bootable": 1},
                {"virtual-device": spec.devid, "device-type": "disk"})  # fmt: skip
    if isinstance(spec, NetSpec):
        common: Entries = {N.KEY_MAC: spec.mac, N.KEY_HANDLE: spec.devid}
        return {**common, "bridge": spec.bridge, "mtu": spec.mtu}, common
    raise ValueError(f"a {spec.kind} has no classic form")


def plug(hv: Hypervisor, domid: int, spec: DeviceSpec, *, announce: bool = False) -> None:
    """Create what the toolstack owns for ``spec`` in guest ``domid`` (EEXIST if there);
    ``announce``: tell a running guest the spec (hot-plug)."""
    if spec.transport != "xenbus":
        return
    if hv.store is None:
        raise OSError("plugging a XenBus device needs XenStore")
    if spec.xen_devtype is not None:
        back, front = classic_entries(spec)
        create_device(hv.store, spec.backend_domid, domid, spec.xen_devtype, spec.devid,
                      back, front)  # fmt: skip
        return
    extra = {HOTPLUG_SPEC_KEY: json.dumps(spec_to_json(spec))} if announce else None
    create_device(hv.store, spec.backend_domid, domid, DEVTYPE, spec.devid,
                  frontend_entries=extra)  # fmt: skip


def unplug(hv: Hypervisor, domid: int, spec: DeviceSpec) -> None:
    """Remove what `plug` made (missing nodes are fine)."""
    if spec.transport != "xenbus" or hv.store is None:
        return
    _, be = xenbus_place(domid, spec)
    with contextlib.suppress(OSError):
        remove_device(hv.store, be)
