"""Echo-device rigs for the transport tests, on the in-process bus
(`xenvirtio.testing.inproc_bus`): a guest driver joined to an `EchoDevice` over
virtio-pci (MSI-X or INT#x) or virtio-mmio, every event recorded."""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.testing.inproc_bus import PCI_WINDOW, InProcessBus
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.mmio.driver import VirtioMmioDriver
from xenvirtio.transport.pci.device import VirtioPciFunction
from xenvirtio.transport.pci.driver import VirtioPciDriver

MMIO_WINDOW = PCI_WINDOW  # where firmware places BARs
GUEST_RAM = 4 << 20
RING_BASE = 0x10000
BUF_BASE = 0x100000
KINDS = ["pci-msix", "pci-intx", "mmio"]


@dataclass
class PciRig:
    """One echo device as a virtio-pci function at 00:``slot``.0, firmware run, driver
    open (MSI-X vectors send data 0x40 + vector)."""

    mem: FlatMemory
    echo: EchoDevice
    fn: VirtioPciFunction
    bus: InProcessBus
    bdf: int
    drv: VirtioPciDriver


def make_pci_rig(echo: EchoDevice | None = None, *, msix: bool = True, slot: int = 3) -> PciRig:
    mem = FlatMemory(GUEST_RAM)
    echo = echo or EchoDevice()
    bus = InProcessBus(record=True)
    found = bus.add_pci(echo, mem, msix=msix, slot=slot)
    assert isinstance(found.core, VirtioPciFunction)
    assert isinstance(found.transport, VirtioPciDriver)
    return PciRig(mem, echo, found.core, bus, found.transport.bdf, found.transport)


@dataclass
class Rig:
    """A guest driver joined to an echo device over one transport, with a way to ask
    "did an interrupt arrive?" that fits the transport (MSI count or line level)."""

    kind: str
    mem: FlatMemory
    echo: EchoDevice
    drv: VirtioPciDriver | VirtioMmioDriver
    bus: InProcessBus
    transport: VirtioPciFunction | VirtioMmioDevice
    _seen_msis: int = 0

    def interrupted(self) -> bool:
        """An interrupt is pending for the driver (consumes MSI-X deliveries seen)."""
        if self.kind == "pci-msix":
            fresh = len(self.bus.msis) > self._seen_msis
            self._seen_msis = len(self.bus.msis)
            return fresh
        return any(self.bus.lines.values())


def make_rig(kind: str, echo: EchoDevice | None = None) -> Rig:
    echo = echo or EchoDevice()
    if kind.startswith("pci"):
        pci = make_pci_rig(echo, msix=kind == "pci-msix")
        return Rig(kind, pci.mem, echo, pci.drv, pci.bus, pci.fn)
    mem = FlatMemory(GUEST_RAM)
    bus = InProcessBus(record=True)
    found = bus.add_mmio(echo, mem)
    return Rig(kind, mem, echo, found.transport, bus, found.core)
