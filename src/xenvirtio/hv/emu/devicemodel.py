"""libxendevicemodel on emu: each call is one dm_op to the hypervisor daemon."""

from __future__ import annotations

from xenvirtio.hv.api.devicemodel import IoreqServerInfo
from xenvirtio.hv.emu.client import Connection
from xenvirtio.spec.ioreq import (
    XEN_DMOP_IO_RANGE_MEMORY,
    XEN_DMOP_IO_RANGE_PCI,
    XEN_DMOP_IO_RANGE_PORT,
    XEN_DMOP_PCI_SBDF,
)


class EmuDeviceModel:
    """A libxendevicemodel handle (:class:`xenvirtio.hv.api.DeviceModel`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def create_ioreq_server(self, domid: int, handle_bufioreq: int) -> int:
        args = {"domid": domid, "handle_bufioreq": handle_bufioreq}
        return int(self._conn.call("dm.create_ioreq_server", args).value["id"])

    def get_ioreq_server_info(self, domid: int, id: int) -> IoreqServerInfo:
        value = self._conn.call("dm.get_ioreq_server_info", {"domid": domid, "id": id}).value
        return IoreqServerInfo(value["ioreq_gfn"], value["bufioreq_gfn"], value["bufioreq_port"])

    def _range(self, domid: int, id: int, type: int, start: int, end: int, map: bool) -> None:
        args = {"domid": domid, "id": id, "type": type, "start": start, "end": end, "map": map}
        self._conn.call("dm.map_io_range", args)

    def map_io_range_to_ioreq_server(
        self, domid: int, id: int, is_mmio: bool, start: int, end: int
    ) -> None:
        kind = XEN_DMOP_IO_RANGE_MEMORY if is_mmio else XEN_DMOP_IO_RANGE_PORT
        self._range(domid, id, kind, start, end, True)

    def unmap_io_range_from_ioreq_server(
        self, domid: int, id: int, is_mmio: bool, start: int, end: int
    ) -> None:
        kind = XEN_DMOP_IO_RANGE_MEMORY if is_mmio else XEN_DMOP_IO_RANGE_PORT
        self._range(domid, id, kind, start, end, False)

    def map_pcidev_to_ioreq_server(
        self, domid: int, id: int, segment: int, bus: int, device: int, function: int
    ) -> None:
        sbdf = XEN_DMOP_PCI_SBDF(segment, bus, device, function)
        self._range(domid, id, XEN_DMOP_IO_RANGE_PCI, sbdf, sbdf, True)

    def unmap_pcidev_from_ioreq_server(
        self, domid: int, id: int, segment: int, bus: int, device: int, function: int
    ) -> None:
        sbdf = XEN_DMOP_PCI_SBDF(segment, bus, device, function)
        self._range(domid, id, XEN_DMOP_IO_RANGE_PCI, sbdf, sbdf, False)

    def set_ioreq_server_state(self, domid: int, id: int, enabled: bool) -> None:
        args = {"domid": domid, "id": id, "enabled": enabled}
        self._conn.call("dm.set_ioreq_server_state", args)

    def destroy_ioreq_server(self, domid: int, id: int) -> None:
        self._conn.call("dm.destroy_ioreq_server", {"domid": domid, "id": id})

    def inject_msi(self, domid: int, msi_addr: int, msi_data: int) -> None:
        self._conn.call("dm.inject_msi", {"domid": domid, "addr": msi_addr, "data": msi_data})

    def set_irq_level(self, domid: int, irq: int, level: int) -> None:
        args = {"domid": domid, "kind": "irq", "irq": irq, "level": level}
        self._conn.call("dm.set_irq_level", args)

    def set_isa_irq_level(self, domid: int, irq: int, level: int) -> None:
        args = {"domid": domid, "kind": "isa_irq", "irq": irq, "level": level}
        self._conn.call("dm.set_irq_level", args)

    def set_pci_intx_level(
        self, domid: int, segment: int, bus: int, device: int, intx: int, level: int
    ) -> None:
        sbdf = XEN_DMOP_PCI_SBDF(segment, bus, device, 0)
        args = {"domid": domid, "sbdf": sbdf, "intx": intx, "level": level}
        self._conn.call("dm.set_pci_intx_level", args)

    def nr_vcpus(self, domid: int) -> int:
        return int(self._conn.call("dm.nr_vcpus", {"domid": domid}).value["vcpus"])

    def close(self) -> None:
        self._conn.close()
