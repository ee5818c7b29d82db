"""`DeviceModelHost`: a device model in a backend domain serving virtio devices to HVM
guests through Xen's ioreq interface, the way QEMU serves an HVM guest's devices.

For each guest (`GuestServer`): create an ioreq server, map its shared ioreq page and
bind every vCPU's ``vp_eport`` (`IoreqServer`), map the guest's RAM on demand
(`ForeignGuestRam`), claim one PCI function per virtio-pci device
(``map_pcidev_to_ioreq_server``) and one MMIO window per virtio-mmio device, then enable
the server. BAR windows are claimed when the guest's firmware or OS places them
(`IoreqDispatcher`).

Everything runs on one asyncio loop: each guest's event channel descriptor is a reader
that answers the ioreqs waiting; events a device raises outside an ioreq (an I/O engine
completing on a worker thread) reach the loop through the transports' ``wakeup`` and are
drained there. One reader call answers at most ``budget`` ioreqs (`IoreqServer.process`);
a guest with more waiting is called again after the loop's other ready callbacks, so
one busy guest cannot starve the others. A guest whose server fails (it was destroyed,
its channel broke) is dropped alone; the other guests keep being served.

    host = DeviceModelHost(hv, loop)                       # on the loop's thread
    guest = host.add_guest(domid)
    fn = guest.add_pci(VirtioBlkDevice(...), slot=4)       # 00:04.0
    guest.add_mmio(EchoDevice(), base=0x0200_0000, gsi=33)
    guest.enable()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from xenvirtio.hv.api.hypervisor import Hypervisor
from xenvirtio.hv.api.ioreq_server import DEFAULT_BUDGET, IoreqServer
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.spec.ioreq import XEN_DMOP_PCI_SBDF
from xenvirtio.transport.api import VirtioDevice, bind_poll
from xenvirtio.transport.ioreq.dispatch import IoreqDispatcher, MmioSlot, PciSlot, Trace
from xenvirtio.transport.ioreq.guest_ram import ForeignGuestRam
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.pci.device import VirtioPciFunction

log = logging.getLogger(__name__)


class GuestServer:
    """What one device-model host serves to guest ``domid``: its ioreq server, its RAM
    mapping and its devices. Use it from the host's loop thread only."""

    def __init__(
        self,
        hv: Hypervisor,
        domid: int,
        *,
        nr_pages: int | None = None,
        wakeup: Callable[[GuestServer], None] | None = None,
        schedule: Callable[[Callable[[], None]], object] | None = None,
        trace: Trace | None = None,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        self.domid = domid
        self._schedule = schedule  # runs a device's poll on the serving thread
        self.budget = budget
        self._evtchn = hv.open_evtchn()
        self._foreign = hv.open_foreignmemory()
        try:
            if nr_pages is None:
                nr_pages = hv.domctl.info(domid).memory_mb * (1 << 20) // XEN_PAGE_SIZE
            self.ram = ForeignGuestRam(self._foreign, domid, nr_pages)
            self.server = IoreqServer(hv.devicemodel, self._foreign, self._evtchn, domid)
        except BaseException:
            self._evtchn.close()
            self._foreign.close()
            raise
        self.dispatcher = IoreqDispatcher(
            hv.devicemodel, domid, self.server.id, self.ram, self.ram.invalidate, trace
        )
        self._wakeup = wakeup
        self.serving = False  # inside `serve`: events are drained before answering
        self.drain_pending = False
        self.failed: str | None = None
        self.closed = False

    def fd(self) -> int:
        return self.server.fd()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup(self)

    def add_pci(
        self,
        device: VirtioDevice,
        *,
        slot: int,
        function: int = 0,
        bus: int = 0,
        segment: int = 0,
        **options: Any,
    ) -> VirtioPciFunction:
        """Serve ``device`` as virtio-pci function ``segment:bus:slot.function``
        (``options`` go to `VirtioPciFunction`: vectors, bar64, ...)."""
        sbdf = XEN_DMOP_PCI_SBDF(segment, bus, slot, function)
        if sbdf in self.dispatcher.pci:
            raise ValueError(f"PCI function {sbdf:#x} is already served")
        self._bind_poll(device)
        fn = VirtioPciFunction(device, self.ram, wakeup=self._wake, **options)
        self.server.map_pcidev(segment, bus, slot, function)
        self.dispatcher.add_pci(PciSlot(sbdf, fn))
        return fn

    def add_mmio(
        self, device: VirtioDevice, *, base: int, gsi: int, **options: Any
    ) -> VirtioMmioDevice:
        """Serve ``device`` as a virtio-mmio window at ``base`` whose interrupt is GSI
        (SPI) ``gsi`` (``options`` go to `VirtioMmioDevice`)."""
        self._bind_poll(device)
        dev = VirtioMmioDevice(device, self.ram, wakeup=self._wake, **options)
        self.server.map_io_range(True, base, base + dev.region_size - 1)
        self.dispatcher.add_mmio(MmioSlot(base, dev, gsi))
        return dev

    def _bind_poll(self, device: VirtioDevice) -> None:
        """A device whose engine completes work on other threads gets its ``poll`` run on
        the serving thread (`PollableDevice`)."""
        if self._schedule is not None:
            bind_poll(device, self._schedule)

    def enable(self) -> None:
        """Start receiving ioreqs (``set_ioreq_server_state(enabled)``)."""
        self.server.set_state(True)

    def serve(self) -> int:
        """Answer the ioreqs waiting now, ``budget`` at most; returns how many
        (``server.backlog``: more may wait, serve again soon)."""
        self.serving = True
        try:
            return self.server.process(self.dispatcher.handle, self.budget)
        finally:
            self.serving = False

    def drain(self) -> None:
        self.drain_pending = False
        self.dispatcher.drain()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.dispatcher.close()
        with contextlib.suppress(OSError, ValueError):
            self.server.close()  # unbinds the vCPU ports, destroys the server
        self.ram.close()
        with contextlib.suppress(OSError):
            self._foreign.close()
        with contextlib.suppress(OSError):
            self._evtchn.close()


class DeviceModelHost:
    """Serves virtio devices to any number of HVM guests from one asyncio loop.

    Construct it, and call every method, on the loop's thread (``loop`` defaults to the
    running loop). `call_soon_threadsafe` is the way in from other threads.
    """

    def __init__(self, hv: Hypervisor, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.hv = hv
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.guests: dict[int, GuestServer] = {}
        self.dropped: dict[int, str] = {}  # domid -> why its server was dropped

    def add_guest(
        self,
        domid: int,
        *,
        nr_pages: int | None = None,
        trace: Trace | None = None,
        budget: int = DEFAULT_BUDGET,
    ) -> GuestServer:
        """Create the ioreq server for ``domid`` (add devices, then ``enable`` it);
        ``budget``: ioreqs answered per turn of the loop before other guests get theirs."""
        if domid in self.guests:
            raise ValueError(f"domain {domid} is already served")
        guest = GuestServer(
            self.hv,
            domid,
            nr_pages=nr_pages,
            wakeup=self._wake,
            schedule=self.call_soon_threadsafe,
            trace=trace,
            budget=budget,
        )
        self.guests[domid] = guest
        self.loop.add_reader(guest.fd(), self._on_ioreq, guest)
        return guest

    def _on_ioreq(self, guest: GuestServer) -> None:
        if guest.closed:
            return
        try:
            guest.serve()
            if guest.server.backlog:  # after the loop's other ready callbacks
                self.loop.call_soon(self._on_ioreq, guest)
        except Exception as err:  # this guest's server is broken; the others go on
            log.warning("domain %d: ioreq server failed: %s", guest.domid, err)
            self.remove_guest(guest.domid, reason=f"{type(err).__name__}: {err}")

    def _wake(self, guest: GuestServer) -> None:
        """A transport queued an event: drain it on the loop (now, if we are serving)."""
        on_loop = threading.get_ident() == self._thread
        if (on_loop and guest.serving) or guest.drain_pending or guest.closed:
            return
        guest.drain_pending = True
        if on_loop:
            self.loop.call_soon(self._drain, guest)
        else:
            self.loop.call_soon_threadsafe(self._drain, guest)

    def _drain(self, guest: GuestServer) -> None:
        if guest.closed:
            return
        try:
            guest.drain()
        except Exception as err:
            log.warning("domain %d: event delivery failed: %s", guest.domid, err)
            self.remove_guest(guest.domid, reason=f"{type(err).__name__}: {err}")

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the host's loop (e.g. a device model's ``poll``)."""
        self.loop.call_soon_threadsafe(fn)

    def remove_guest(self, domid: int, *, reason: str = "removed") -> None:
        """Stop serving ``domid``: its reader, server, RAM mapping and handles go."""
        guest = self.guests.pop(domid, None)
        if guest is None:
            return
        guest.failed = reason if reason != "removed" else None
        if guest.failed:
            self.dropped[domid] = reason
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(guest.fd())
        guest.close()

    def close(self) -> None:
        for domid in list(self.guests):
            self.remove_guest(domid)
