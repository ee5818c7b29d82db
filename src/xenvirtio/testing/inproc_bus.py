"""An in-process bus joining guest-side transport drivers to device-side transport cores
(what Xen's ioreqs and event channels do on a real host), for tests and benchmarks.

Every access is served by the device-side core; its events are then acted on as Xen
would: an MSI is routed to the driver that programmed it (and to ``on_msi``), an
interrupt line changes level (``lines``) and, when asserted, calls the slot's
``handler``, a BAR move re-routes addresses (``windows``). Events a device raises
outside an access (an I/O engine completing later) reach the bus through the
transport's ``wakeup`` and are handled the same way. Single-threaded: call everything on
one thread; a device whose engine completes on other threads (`PollableDevice`) gets its
``poll`` scheduled with ``schedule``.

Two ways in: ``add_pci`` / ``add_mmio`` build the core, run firmware and open the guest
driver (a `Slot`); ``attach_pci`` / ``attach_mmio`` put a core built elsewhere on the
bus and leave firmware and driver to the caller. With ``record=True`` every event and
MSI is kept (``log``, ``msis``, ``logged``) for tests to inspect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec.pci import pci_bdf
from xenvirtio.transport.api import VirtioDevice, bind_poll
from xenvirtio.transport.dma import DmaPages
from xenvirtio.transport.events import (
    BarDecodeChanged,
    DeviceActivated,
    DeviceReset,
    InterruptLine,
    MsiMessage,
    NeedsReset,
    TransportEvent,
)
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.mmio.driver import VirtioMmioDriver
from xenvirtio.transport.pci.bios import MmioWindow, assign_bars
from xenvirtio.transport.pci.device import VirtioPciFunction
from xenvirtio.transport.pci.driver import VirtioPciDriver

MMIO_BASE = 0xD000_0000  # virtio-mmio windows, 4 KiB apart
PCI_WINDOW = (0xE000_0000, 0x1000_0000)  # where firmware places BARs
MSI_ADDRESS = 0xFEE0_0000  # x86 local APIC message address
FIRST_PCI_SLOT = 3  # 00:03.0, then 00:04.0 ...

Schedule = Callable[[Callable[[], None]], object]
Core = VirtioMmioDevice | VirtioPciFunction
Driver = VirtioMmioDriver | VirtioPciDriver


def _ones(size: int) -> int:
    return (1 << (8 * size)) - 1 if 1 <= size <= 8 else 0


def msi_route(base_data: int) -> Callable[[int], tuple[int, int]]:
    """The guest OS's vector allocation: one message data value per vector."""
    return lambda vector: (MSI_ADDRESS, base_data + vector)


@dataclass(eq=False)
class Slot:
    """One device on the bus: its device-side core, its guest driver transport, and the
    guest's interrupt handler for it (set once the guest driver exists)."""

    transport: Driver
    core: Core
    handler: Callable[[], None] | None = None

    def interrupt(self) -> None:
        if self.handler is not None:
            self.handler()


class InProcessBus:
    """Implements both `MmioBus` (``read``/``write``) and `PciBus` (``cfg_*``/``mmio_*``).

    ``functions`` (by BDF) and ``devices`` (by window base) are the cores on the bus;
    ``lines`` and the keys of ``log`` name a core the same way. ``events`` keeps the
    lifecycle events (activation, reset, NEEDS_RESET) of slots, whatever ``record``."""

    def __init__(self, *, record: bool = False, schedule: Schedule | None = None) -> None:
        self.functions: dict[int, VirtioPciFunction] = {}
        self.devices: dict[int, VirtioMmioDevice] = {}
        self._slots: dict[int, Slot] = {}  # id(core) -> slot
        self._pci_window = MmioWindow(*PCI_WINDOW)
        self._record, self._schedule = record, schedule
        self._draining = False
        self.events: list[tuple[Slot, TransportEvent]] = []
        self.log: list[tuple[int, TransportEvent]] = []
        self.msis: list[MsiMessage] = []
        self.lines: dict[int, bool] = {}
        self.windows: dict[tuple[int, int], tuple[int, int]] = {}  # (bdf, bar) -> base, size
        self.on_msi: Callable[[int, int], bool] | None = None

    # ---------------------------------------------------------------- attaching devices
    def attach_mmio(self, base: int, dev: VirtioMmioDevice) -> None:
        self.devices[base] = dev
        dev.events.wakeup = self.drain  # interrupts raised outside an access

    def attach_pci(self, bdf: int, fn: VirtioPciFunction) -> None:
        self.functions[bdf] = fn
        fn.events.wakeup = self.drain

    def add_mmio(
        self, device: VirtioDevice, mem: GuestMemory, *, dma: DmaPages | None = None
    ) -> Slot:
        """``device`` in the next virtio-mmio window; ``dma`` goes to its driver."""
        self._bind(device)
        base = MMIO_BASE + 0x1000 * len(self.devices)
        core = VirtioMmioDevice(device, mem)
        self.attach_mmio(base, core)
        return self._slot(VirtioMmioDriver(self, base, dma=dma), core)

    def add_pci(
        self,
        device: VirtioDevice,
        mem: GuestMemory,
        *,
        msix: bool = True,
        slot: int | None = None,
        dma: DmaPages | None = None,
    ) -> Slot:
        """``device`` as function 0 of PCI ``slot`` (the next free one by default),
        BARs placed as firmware does; its driver uses MSI-X unless ``msix`` is False."""
        self._bind(device)
        bdf = pci_bdf(0, FIRST_PCI_SLOT + len(self.functions) if slot is None else slot, 0)
        if bdf in self.functions:
            raise ValueError(f"PCI function {bdf:#x} is taken")
        core = VirtioPciFunction(device, mem)
        self.attach_pci(bdf, core)
        assign_bars(self, bdf, self._pci_window)  # what firmware does at boot
        route = msi_route(0x40 * len(self.functions)) if msix else None
        return self._slot(VirtioPciDriver(self, bdf, msi=route, dma=dma), core)

    def _bind(self, device: VirtioDevice) -> None:
        if self._schedule is not None:
            bind_poll(device, self._schedule)

    def _slot(
        self,
        transport: VirtioMmioDriver | VirtioPciDriver,
        core: VirtioMmioDevice | VirtioPciFunction,
    ) -> Slot:
        slot = self._slots[id(core)] = Slot(transport, core)
        return slot

    def slots(self) -> list[Slot]:
        return list(self._slots.values())

    # ---------------------------------------------------------------- MmioBus
    def _mmio_hit(self, address: int) -> tuple[int, VirtioMmioDevice] | None:
        for base, dev in self.devices.items():
            if base <= address < base + dev.region_size:
                return base, dev
        return None

    def read(self, address: int, size: int) -> int:
        hit = self._mmio_hit(address)
        if hit is None:
            return _ones(size)
        value = hit[1].read(address - hit[0], size)
        self.drain()
        return value

    def write(self, address: int, size: int, value: int) -> None:
        hit = self._mmio_hit(address)
        if hit is not None:
            hit[1].write(address - hit[0], size, value)
            self.drain()

    # ---------------------------------------------------------------- PciBus
    def cfg_read(self, bdf: int, offset: int, size: int) -> int:
        fn = self.functions.get(bdf)
        if fn is None:
            return _ones(size)  # master abort
        value = fn.config_read(offset, size)
        self.drain()
        return value

    def cfg_write(self, bdf: int, offset: int, size: int, value: int) -> None:
        fn = self.functions.get(bdf)
        if fn is not None:
            fn.config_write(offset, size, value)
            self.drain()

    def _decode(self, address: int, size: int) -> tuple[VirtioPciFunction, int, int] | None:
        for bdf, fn in self.functions.items():
            hit = fn.decode(address, size)
            if hit is not None:
                assert self._window_agrees(bdf, hit[0], address), "decode and events disagree"
                return fn, hit[0], hit[1]
        return None

    def _window_agrees(self, bdf: int, bar: int, address: int) -> bool:
        base, size = self.windows.get((bdf, bar), (None, 0))
        return base is not None and base <= address < base + size

    def mmio_read(self, address: int, size: int) -> int:
        hit = self._decode(address, size)
        if hit is None:
            return _ones(size)
        value = hit[0].bar_read(hit[1], hit[2], size)
        self.drain()
        return value

    def mmio_write(self, address: int, size: int, value: int) -> None:
        hit = self._decode(address, size)
        if hit is not None:
            hit[0].bar_write(hit[1], hit[2], size, value)
            self.drain()

    # ---------------------------------------------------------------- events
    def drain(self) -> None:
        """Act on every pending event (re-entry from a handler is folded in)."""
        if self._draining:
            return
        self._draining = True
        try:
            while batch := self._take():
                for key, core, event in batch:
                    self._act(key, core, event)
        finally:
            self._draining = False

    def _take(self) -> list[tuple[int, Core, TransportEvent]]:
        cores: list[tuple[int, Core]] = [
            *self.devices.items(),
            *self.functions.items(),
        ]
        return [(key, core, ev) for key, core in cores for ev in core.take_events()]

    def _act(
        self, key: int, core: VirtioMmioDevice | VirtioPciFunction, ev: TransportEvent
    ) -> None:
        slot = self._slots.get(id(core))
        if self._record:
            self.log.append((key, ev))
        if isinstance(ev, MsiMessage):
            self._deliver_msi(ev)
        elif isinstance(ev, InterruptLine):
            self.lines[key] = ev.asserted
            if ev.asserted and slot is not None:
                slot.interrupt()
        elif isinstance(ev, BarDecodeChanged):
            if ev.base is None:
                self.windows.pop((key, ev.bar), None)
            else:
                self.windows[(key, ev.bar)] = (ev.base, ev.size)
        elif isinstance(ev, NeedsReset | DeviceActivated | DeviceReset) and slot is not None:
            self.events.append((slot, ev))  # kept for tests; kicks and BAR moves not

    def _deliver_msi(self, ev: MsiMessage) -> None:
        if self._record:
            self.msis.append(ev)
        if self.on_msi is not None:
            self.on_msi(ev.address, ev.data)
        for target in self._slots.values():
            transport = target.transport
            if isinstance(transport, VirtioPciDriver) and transport.handle_msi(ev.address, ev.data):
                target.interrupt()

    def logged(self, kind: type[TransportEvent]) -> list[TransportEvent]:
        """Every recorded event of ``kind`` (``record=True``), in order."""
        return [ev for _, ev in self.log if isinstance(ev, kind)]
