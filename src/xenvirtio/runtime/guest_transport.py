"""Inside the guest: find a device at its place and give its driver a transport.

As a guest kernel does at boot: XenBus devices by devid under ``device/virtio``
(`XenbusVirtioFrontend`, DMA from pages it grants); PCI functions after the firmware
scan (`firmware_setup`), MSI-X vectors carried by pirqs to event channels; virtio-mmio
windows at their base with their GSI. pci and mmio drivers get a window of contiguous
guest RAM for their rings and buffers (the device model sees guest-physical addresses).

    bus = GuestDevices(guest)
    opened = bus.open(spec)                        # an `OpenedTransport`
    driver = VirtioBlkDriver(opened.transport, ...)
    opened.set_handler(driver.interrupt)
    bus.attach(loop)                               # interrupts from now on, on the loop
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from xenvirtio.hv.api.guest import Guest
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.runtime.devices import mmio_place, pci_place
from xenvirtio.runtime.specs import DeviceSpec
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.transport.api import VirtioTransport
from xenvirtio.transport.dma import DmaWindow
from xenvirtio.transport.ioreq.guest_bus import IoreqMmioBus, IoreqPciBus, firmware_setup
from xenvirtio.transport.ioreq.guest_irq import GuestIrqRouter
from xenvirtio.transport.mmio.driver import VirtioMmioDriver
from xenvirtio.transport.pci.driver import VirtioPciDriver
from xenvirtio.transport.xenbus.frontend import XenbusVirtioFrontend

DMA_PAGES = 512  # 2 MiB per device: rings and bounce buffers


class DeviceNotFoundError(LookupError):
    """Nothing answers at the device's place."""


@dataclass
class OpenedTransport:
    """A driver's transport; `set_handler` names what runs on each interrupt."""

    transport: VirtioTransport
    close: Callable[[], None]
    handler: list[Callable[[], None]] = field(default_factory=list)

    def set_handler(self, handler: Callable[[], None]) -> None:
        self.handler[:] = [handler]

    def fire(self) -> None:
        for handler in self.handler:
            handler()


class GuestDevices:
    """The guest's buses: XenBus frontends, and (HVM) the PCI bus, mmio and interrupts."""

    def __init__(self, guest: Guest, *, dma_pages: int = DMA_PAGES) -> None:
        self.guest, self.dma_pages = guest, dma_pages
        self._router: GuestIrqRouter | None = None
        self._pci: IoreqPciBus | None = None
        self._pci_found: set[int] = set()
        self._frontends: list[XenbusVirtioFrontend] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, spec: DeviceSpec) -> OpenedTransport:
        if spec.transport == "xenbus":
            return self._open_xenbus(spec)
        if spec.transport == "pci":
            return self._open_pci(spec)
        return self._open_mmio(spec)

    def _open_xenbus(self, spec: DeviceSpec) -> OpenedTransport:
        frontend = XenbusVirtioFrontend(self.guest, spec.devid, dma_pages=self.dma_pages)
        opened = OpenedTransport(frontend, frontend.close)
        frontend.on_interrupt = opened.fire
        self._frontends.append(frontend)
        if self._loop is not None:
            frontend.attach(self._loop)
        return opened

    def router(self) -> GuestIrqRouter:
        if self._router is None:
            self._router = GuestIrqRouter.of_guest(self.guest)
            if self._loop is not None:
                self._watch_router(self._loop, self._router)
        return self._router

    @staticmethod
    def _watch_router(loop: asyncio.AbstractEventLoop, router: GuestIrqRouter) -> None:
        for fd in router.fds():
            loop.add_reader(fd, router.poll)

    def _window(self) -> DmaWindow:
        gfns = self.guest.alloc_pages(self.dma_pages)
        if gfns != list(range(gfns[0], gfns[0] + len(gfns))):
            raise MemoryError("no contiguous DMA window")
        mem = FlatMemory(buffer=self.guest.memory)
        return DmaWindow(mem, gfns[0] * XEN_PAGE_SIZE, self.dma_pages * XEN_PAGE_SIZE)

    def _open_pci(self, spec: DeviceSpec) -> OpenedTransport:
        if self._pci is None:  # the firmware's scan, once
            self._pci = IoreqPciBus(self.guest.vcpu_io)
            self._pci_found = {f.bdf for f in firmware_setup(self._pci)}
        bdf = pci_place(spec)
        if bdf not in self._pci_found:
            raise DeviceNotFoundError(f"{spec.name}: no PCI function at {bdf >> 3:02x}.0")
        route = self.router().msi_route()
        drv = VirtioPciDriver(self._pci, bdf, msi=route, dma=self._window())
        opened = OpenedTransport(drv, route.release)

        def on_msi(address: int, data: int) -> None:
            if drv.handle_msi(address, data):
                opened.fire()

        route.set_handler(on_msi)
        return opened

    def _open_mmio(self, spec: DeviceSpec) -> OpenedTransport:
        place = mmio_place(spec)
        drv = VirtioMmioDriver(IoreqMmioBus(self.guest.vcpu_io), place.base, dma=self._window())
        opened = OpenedTransport(drv, lambda: None)
        self.router().bind_gsi(place.gsi, opened.fire)
        return opened

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver interrupts on ``loop`` (call on its thread)."""
        self._loop = loop
        for frontend in self._frontends:
            frontend.attach(loop)
        if self._router is not None:
            self._watch_router(loop, self._router)

    def close(self) -> None:
        if self._router is not None:
            if self._loop is not None:
                for fd in self._router.fds():
                    with contextlib.suppress(Exception):
                        self._loop.remove_reader(fd)
            self._router.close()
            self._router = None
