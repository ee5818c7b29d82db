"""virtio-pci and virtio-mmio served through Xen's ioreq interface (HVM / PV-on-HVM).

Device-model side (a backend domain, dom0): `DeviceModelHost` serves any number of
guests from one asyncio loop, a `GuestServer` each (ioreq server, claimed PCI functions,
BAR and MMIO windows, guest RAM mapped on demand by `ForeignGuestRam`);
`IoreqDispatcher` turns ioreqs into transport calls and transport events into
``inject_msi`` / ``set_pci_intx_level`` / ``set_irq_level`` / range mappings.
`HostThread` runs a host on a thread of its own.

Guest side (inside the HVM guest): `IoreqPciBus` / `IoreqMmioBus` (every access one
ioreq round trip), `firmware_setup` (hvmloader's scan and BAR placement) and
`GuestIrqRouter` (MSIs carrying pirqs to event channels, INT#x and GSIs to handlers).

See docs/transports.md, "Served through ioreqs".
"""

from xenvirtio.transport.ioreq.dispatch import IoreqDispatcher, IoreqStats, MmioSlot, PciSlot
from xenvirtio.transport.ioreq.guest_bus import (
    GUEST_VIRTIO_MMIO_BASE,
    GUEST_VIRTIO_MMIO_SIZE,
    GUEST_VIRTIO_MMIO_SPI_FIRST,
    HVM_PCI_MEM_END,
    HVM_PCI_MEM_START,
    IoreqMmioBus,
    IoreqPciBus,
    firmware_setup,
)
from xenvirtio.transport.ioreq.guest_irq import GuestIrqRouter, PirqMsiRoute
from xenvirtio.transport.ioreq.guest_ram import ForeignGuestRam
from xenvirtio.transport.ioreq.host import DeviceModelHost, GuestServer
from xenvirtio.transport.ioreq.msi import hvm_pci_intx_gsi, msi_pirq, pirq_msi_message
from xenvirtio.transport.ioreq.runner import HostThread

__all__ = [
    "GUEST_VIRTIO_MMIO_BASE",
    "GUEST_VIRTIO_MMIO_SIZE",
    "GUEST_VIRTIO_MMIO_SPI_FIRST",
    "HVM_PCI_MEM_END",
    "HVM_PCI_MEM_START",
    "DeviceModelHost",
    "ForeignGuestRam",
    "GuestIrqRouter",
    "GuestServer",
    "HostThread",
    "IoreqDispatcher",
    "IoreqMmioBus",
    "IoreqPciBus",
    "IoreqStats",
    "MmioSlot",
    "PciSlot",
    "PirqMsiRoute",
    "firmware_setup",
    "hvm_pci_intx_gsi",
    "msi_pirq",
    "pirq_msi_message",
]
