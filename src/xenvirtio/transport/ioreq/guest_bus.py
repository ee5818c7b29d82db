"""The guest's side of ioreqs: its PCI configuration and MMIO accesses, each one a vCPU
access (`VcpuIo.access`) that the hypervisor turns into an ioreq for the device model
that claimed it, and the firmware step that finds and places the functions.

`IoreqPciBus` is the `PciBus` port of `VirtioPciDriver` and `bios`; `IoreqMmioBus` the
`MmioBus` port of `VirtioMmioDriver`. An access nobody claimed reads all-ones, as on Xen.
`firmware_setup` is what hvmloader does before the OS starts: scan bus 0, size every
BAR and place it in the HVM MMIO hole below 4 GiB, enable decoding and bus mastering.
"""

from __future__ import annotations

from typing import Final

from xenvirtio.hv.api.guest import VcpuIo
from xenvirtio.spec.ioreq import (
    IOREQ_READ,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_WRITE,
    pci_config_addr,
)
from xenvirtio.transport.pci.bios import MmioWindow, PciFunctionId, assign_bars, scan

# hvm/e820.h: the MMIO hole starts at HVM_BELOW_4G_MMIO_START; hvmloader's PCI_MEM_END.
HVM_PCI_MEM_START: Final = 0xF000_0000
HVM_PCI_MEM_END: Final = 0xFC00_0000
# arch-arm.h: where libxl puts virtio-mmio windows, and their SPIs.
GUEST_VIRTIO_MMIO_BASE: Final = 0x0200_0000
GUEST_VIRTIO_MMIO_SIZE: Final = 0x0010_0000
GUEST_VIRTIO_MMIO_SPI_FIRST: Final = 33
GUEST_VIRTIO_MMIO_SPI_LAST: Final = 43


class IoreqPciBus:
    """PCI segment ``segment`` as vCPU ``vcpu`` reaches it (implements `PciBus`).
    ``bdf`` is ``bus << 8 | device << 3 | function`` (``pci_bdf``)."""

    def __init__(
        self, vcpu_io: VcpuIo, *, segment: int = 0, vcpu: int = 0, timeout: float = 10.0
    ) -> None:
        self.io = vcpu_io
        self.segment = segment & 0xFFFF
        self.vcpu = vcpu
        self.timeout = timeout
        self.accesses = 0

    def _access(self, kind: int, addr: int, size: int, direction: int, value: int = 0) -> int:
        self.accesses += 1
        return self.io.access(
            kind, addr, size, direction, value, vcpu=self.vcpu, timeout=self.timeout
        )

    def _cfg_addr(self, bdf: int, offset: int) -> int:
        return pci_config_addr(self.segment << 16 | (bdf & 0xFFFF), offset & 0xFFFF_FFFF)

    def cfg_read(self, bdf: int, offset: int, size: int) -> int:
        return self._access(IOREQ_TYPE_PCI_CONFIG, self._cfg_addr(bdf, offset), size, IOREQ_READ)

    def cfg_write(self, bdf: int, offset: int, size: int, value: int) -> None:
        addr = self._cfg_addr(bdf, offset)
        self._access(IOREQ_TYPE_PCI_CONFIG, addr, size, IOREQ_WRITE, value)

    def mmio_read(self, address: int, size: int) -> int:
        return self._access(IOREQ_TYPE_COPY, address, size, IOREQ_READ)

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self._access(IOREQ_TYPE_COPY, address, size, IOREQ_WRITE, value)


class IoreqMmioBus:
    """Guest-physical MMIO as vCPU ``vcpu`` reaches it (implements `MmioBus`)."""

    def __init__(self, vcpu_io: VcpuIo, *, vcpu: int = 0, timeout: float = 10.0) -> None:
        self._pci = IoreqPciBus(vcpu_io, vcpu=vcpu, timeout=timeout)

    @property
    def accesses(self) -> int:
        return self._pci.accesses

    def read(self, address: int, size: int) -> int:
        return self._pci.mmio_read(address, size)

    def write(self, address: int, size: int, value: int) -> None:
        self._pci.mmio_write(address, size, value)


def firmware_setup(bus: IoreqPciBus, window: MmioWindow | None = None) -> list[PciFunctionId]:
    """Find every function on bus 0 and give its memory BARs addresses (hvmloader)."""
    window = window or MmioWindow(HVM_PCI_MEM_START, HVM_PCI_MEM_END - HVM_PCI_MEM_START)
    found = scan(bus)
    for function in found:
        assign_bars(bus, function.bdf, window)
    return found
