"""A guest driver's transport on emu, whichever it is: virtio over XenBus (PV guest,
grant DMA) or virtio-pci / virtio-mmio served through ioreqs (PV-on-HVM guest, a DMA
window of the guest's own RAM). Runs in a domain process, on its asyncio loop.

    link = open_link(guest, {"transport": "xenbus", "devid": 0, ...})
    driver = VirtioNetDriver(link.transport, link.dma, nic)   # probes
    link.start(driver.interrupt)                              # interrupts from the loop
    ...
    driver.close(); link.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xenvirtio.hv.api.guest import Guest
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.testing.ioreq_guest import contiguous_pages, open_device
from xenvirtio.transport.api import VirtioTransport
from xenvirtio.transport.dma import DmaPool, DmaWindow
from xenvirtio.transport.ioreq.guest_irq import GuestIrqRouter
from xenvirtio.transport.xenbus.frontend import XenbusVirtioFrontend

TRANSPORTS = ("xenbus", "pci-msix", "pci-intx", "mmio")
DEFAULT_DMA_PAGES = 256


@dataclass
class GuestLink:
    """A transport, the DMA pool its driver allocates from, and how to route its
    interrupts to the driver (``start``) and let go of it (``close``)."""

    transport: VirtioTransport
    dma: DmaPool
    start: Callable[[Callable[[], None]], None]
    close: Callable[[], None]


def open_link(guest: Guest, spec: dict[str, Any]) -> GuestLink:
    """``spec``: ``transport`` (one of `TRANSPORTS`), ``device_id`` (virtio id, for
    PCI), ``devid`` (XenBus), ``base``/``gsi`` (virtio-mmio), ``dma_pages``. Call on
    the running loop's thread."""
    kind = spec["transport"]
    pages = int(spec.get("dma_pages", DEFAULT_DMA_PAGES))
    if kind == "xenbus":
        return _xenbus(guest, int(spec.get("devid", 0)), pages)
    if kind not in TRANSPORTS:
        raise ValueError(f"unknown transport {kind!r}")
    return _ioreq(guest, {**spec, "kind": kind}, pages)


def _xenbus(guest: Guest, devid: int, pages: int) -> GuestLink:
    frontend = XenbusVirtioFrontend(guest, devid, dma_pages=pages)
    loop = asyncio.get_running_loop()

    def start(handler: Callable[[], None]) -> None:
        frontend.on_interrupt = handler
        frontend.attach(loop)  # from now on the transport lives on the loop's thread

    return GuestLink(frontend, DmaPool.for_transport(frontend), start, frontend.close)


def _ioreq(guest: Guest, spec: dict[str, Any], pages: int) -> GuestLink:
    loop = asyncio.get_running_loop()
    router = GuestIrqRouter.of_guest(guest)
    mem = FlatMemory(buffer=guest.memory)
    window = DmaWindow(mem, contiguous_pages(guest, pages), pages * XEN_PAGE_SIZE)
    dev = open_device(guest, router, spec, dma=window)

    def start(handler: Callable[[], None]) -> None:
        dev.irq.hook = handler
        for fd in router.fds():
            loop.add_reader(fd, router.poll)
        router.poll()  # what arrived while the driver probed

    def close() -> None:
        for fd in router.fds():
            loop.remove_reader(fd)
        router.close()

    return GuestLink(dev.drv, DmaPool.for_transport(dev.drv), start, close)
