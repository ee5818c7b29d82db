"""libxendevicemodel: ioreq servers and interrupt injection for HVM guests (dm_op).

A device model creates an ioreq server for a guest, claims I/O port, MMIO and PCI
config ranges, maps the server's shared ioreq page (``ForeignMemory.map_resource`` with
``XENMEM_resource_ioreq_server``), binds each vCPU's ``vp_eport`` with
``Evtchn.bind_interdomain`` and answers ioreqs (see :mod:`xenvirtio.hv.api.ioreq_server`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class IoreqServerInfo:
    """``xendevicemodel_get_ioreq_server_info``. The gfns are None when the pages are
    reachable only through ``map_resource`` (Xen's ``XEN_DMOP_no_gfns``)."""

    ioreq_gfn: int | None
    bufioreq_gfn: int | None
    bufioreq_port: int | None


class DeviceModel(Protocol):
    """A libxendevicemodel handle (``xendevicemodel_handle``)."""

    def create_ioreq_server(self, domid: int, handle_bufioreq: int) -> int:
        """``xendevicemodel_create_ioreq_server`` -> ioservid (disabled until
        :meth:`set_ioreq_server_state`)."""
        ...

    def get_ioreq_server_info(self, domid: int, id: int) -> IoreqServerInfo: ...

    def map_io_range_to_ioreq_server(
        self, domid: int, id: int, is_mmio: bool, start: int, end: int
    ) -> None:
        """Claim ports or MMIO addresses ``start..end`` (inclusive)."""
        ...

    def unmap_io_range_from_ioreq_server(
        self, domid: int, id: int, is_mmio: bool, start: int, end: int
    ) -> None: ...

    def map_pcidev_to_ioreq_server(
        self, domid: int, id: int, segment: int, bus: int, device: int, function: int
    ) -> None:
        """Claim the PCI config space of one function (IOREQ_TYPE_PCI_CONFIG ioreqs)."""
        ...

    def unmap_pcidev_from_ioreq_server(
        self, domid: int, id: int, segment: int, bus: int, device: int, function: int
    ) -> None: ...

    def set_ioreq_server_state(self, domid: int, id: int, enabled: bool) -> None: ...

    def destroy_ioreq_server(self, domid: int, id: int) -> None: ...

    def inject_msi(self, domid: int, msi_addr: int, msi_data: int) -> None:
        """``xendevicemodel_inject_msi``."""
        ...

    def set_irq_level(self, domid: int, irq: int, level: int) -> None:
        """``xendevicemodel_set_irq_level`` (a GSI / SPI line)."""
        ...

    def set_isa_irq_level(self, domid: int, irq: int, level: int) -> None: ...

    def set_pci_intx_level(
        self, domid: int, segment: int, bus: int, device: int, intx: int, level: int
    ) -> None:
        """``xendevicemodel_set_pci_intx_level`` (intx 0..3 = INTA..INTD)."""
        ...

    def nr_vcpus(self, domid: int) -> int:
        """``xendevicemodel_nr_vcpus``."""
        ...

    def close(self) -> None: ...
