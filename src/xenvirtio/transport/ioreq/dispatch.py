"""`IoreqDispatcher`: one guest's ioreqs turned into transport calls, and the transports'
events turned into device-model operations (no I/O of its own: it calls the
`DeviceModel` port).

    handle(ioreq) -> value        (an `IoreqHandler` for `IoreqServer.process`)
      PCI_CONFIG  sbdf, reg       -> VirtioPciFunction.config_read / config_write
      COPY        addr (x count)  -> fn.decode + bar_read / bar_write, or a virtio-mmio window
      PIO         port            -> nothing claims ports: reads all-ones
      INVALIDATE                  -> the guest RAM mapcache drops what it can
      then drain():
        MsiMessage                -> inject_msi(domid, address, data)
        InterruptLine (PCI)       -> set_pci_intx_level(domid, seg, bus, dev, INTA, level)
        InterruptLine (MMIO)      -> set_irq_level(domid, gsi, level)
        BarDecodeChanged          -> unmap the old window, map the new one to the server

Events are drained before the ioreq is answered, so a BAR the guest just placed is
claimed before its next access. Nothing here trusts the ioreq: bad sizes, rep counts or
data pointers are refused (reads give all-ones), a device that raises is logged and
answered all-ones, a refused range mapping leaves the window unclaimed. A failure stays
inside this guest's dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from xenvirtio.hv.api.devicemodel import DeviceModel
from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec.ioreq import (
    IOREQ_TYPE_INVALIDATE,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_TYPE_TIMEOFFSET,
    Ioreq,
)
from xenvirtio.transport.events import (
    BarDecodeChanged,
    DeviceActivated,
    DeviceReset,
    InterruptLine,
    MsiMessage,
    NeedsReset,
    QueueNotified,
    TransportEvent,
)
from xenvirtio.transport.ioreq.access import (
    check_access,
    element_address,
    is_read,
    ones,
    pci_config_target,
)
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.pci.device import VirtioPciFunction

log = logging.getLogger(__name__)

INTA = 0
Trace = Callable[["PciSlot | MmioSlot", TransportEvent], None]


@dataclass(eq=False)
class PciSlot:
    """A virtio-pci function at ``sbdf``; ``windows`` are its BARs claimed from Xen."""

    sbdf: int
    fn: VirtioPciFunction
    windows: dict[int, tuple[int, int]] = field(default_factory=dict)  # bar -> (base, size)

    @property
    def bus(self) -> int:
        return (self.sbdf >> 8) & 0xFF

    @property
    def device(self) -> int:
        return (self.sbdf >> 3) & 0x1F


@dataclass(eq=False)
class MmioSlot:
    """A virtio-mmio window at ``base`` whose line is ``gsi`` (an SPI on Arm)."""

    base: int
    dev: VirtioMmioDevice
    gsi: int


@dataclass
class IoreqStats:
    """What one guest's dispatcher did (tracing and tests)."""

    pci_config: int = 0
    copy: int = 0
    pio: int = 0
    invalidate: int = 0
    other: int = 0
    refused: int = 0  # ioreqs not carried out (bad size, count, pointer ...)
    unclaimed: int = 0  # element accesses no device claimed
    device_errors: int = 0  # a device raised (a bug, logged)
    msis: int = 0
    line_changes: int = 0
    bar_maps: int = 0
    bar_unmaps: int = 0
    map_failures: int = 0
    kicks: int = 0
    activations: int = 0
    resets: int = 0
    needs_reset: int = 0


class IoreqDispatcher:
    """Serves the ioreqs of guest ``domid`` that reach ioreq server ``ioservid``."""

    def __init__(
        self,
        dm: DeviceModel,
        domid: int,
        ioservid: int,
        ram: GuestMemory,
        invalidate: Callable[[], object] | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.dm = dm
        self.domid = domid
        self.ioservid = ioservid
        self.ram = ram
        self._invalidate = invalidate
        self.trace = trace
        self.pci: dict[int, PciSlot] = {}
        self.mmio: list[MmioSlot] = []
        self.stats = IoreqStats()

    def add_pci(self, slot: PciSlot) -> None:
        self.pci[slot.sbdf] = slot

    def add_mmio(self, slot: MmioSlot) -> None:
        self.mmio.append(slot)

    # -- ioreqs --------------------------------------------------------------------------
    def handle(self, req: Ioreq) -> int:
        """Serve one ioreq; returns the value a read yields (ignored for writes)."""
        try:
            return self._dispatch(req)
        except Exception:  # a device model bug must not take the host down
            self.stats.device_errors += 1
            log.exception("domain %d: ioreq %r failed", self.domid, req)
            return ones(req.size)
        finally:
            self.drain()

    def _dispatch(self, req: Ioreq) -> int:
        if req.type == IOREQ_TYPE_INVALIDATE:
            self.stats.invalidate += 1
            if self._invalidate is not None:
                self._invalidate()
            return req.data
        if req.type == IOREQ_TYPE_TIMEOFFSET:
            self.stats.other += 1
            return req.data
        reason = check_access(req)
        if reason is not None:
            self.stats.refused += 1
            log.debug("domain %d: refused ioreq (%s)", self.domid, reason)
            return ones(req.size) if is_read(req) else req.data
        if req.type == IOREQ_TYPE_PCI_CONFIG:
            self.stats.pci_config += 1
            return self._pci_config(req)
        if req.type == IOREQ_TYPE_PIO:
            self.stats.pio += 1
        else:
            self.stats.copy += 1
        return self._copy(req)

    def _pci_config(self, req: Ioreq) -> int:
        target = pci_config_target(req.addr)
        slot = self.pci.get(target.sbdf)
        if slot is None:  # not ours (Xen routed it by mistake): a master abort
            self.stats.unclaimed += 1
            return ones(req.size)
        if is_read(req):
            return slot.fn.config_read(target.reg, req.size)
        slot.fn.config_write(target.reg, req.size, req.data & ones(req.size))
        return 0

    def _copy(self, req: Ioreq) -> int:
        """``count`` element accesses; with ``data_is_ptr`` each element moves between
        the device and the guest buffer at ``data`` (QEMU's ``cpu_ioreq_move``)."""
        size, read = req.size, is_read(req)
        value = req.data
        for i in range(req.count):
            addr = element_address(req.addr, size, i, req.df)
            if not req.data_is_ptr:
                if read:
                    value = self._read(req.type, addr, size)
                else:
                    self._write(req.type, addr, size, req.data & ones(size))
                continue
            buf = element_address(req.data, size, i, req.df)
            try:
                if read:
                    data = self._read(req.type, addr, size).to_bytes(size, "little")
                    self.ram.write(buf, data)
                else:
                    data = self.ram.read(buf, size)
                    self._write(req.type, addr, size, int.from_bytes(data, "little"))
            except GuestMemoryError as err:  # the rep stops where the buffer faults
                self.stats.refused += 1
                log.debug("domain %d: rep buffer fault: %s", self.domid, err)
                break
        return value  # with data_is_ptr, the pointer goes back unchanged

    def _read(self, kind: int, addr: int, size: int) -> int:
        if kind == IOREQ_TYPE_PIO:  # no I/O BARs: nothing claims ports
            self.stats.unclaimed += 1
            return ones(size)
        for slot in self.pci.values():
            hit = slot.fn.decode(addr, size)
            if hit is not None:
                return slot.fn.bar_read(hit[0], hit[1], size)
        for mmio in self.mmio:
            if mmio.base <= addr and addr + size <= mmio.base + mmio.dev.region_size:
                return mmio.dev.read(addr - mmio.base, size)
        self.stats.unclaimed += 1
        return ones(size)

    def _write(self, kind: int, addr: int, size: int, value: int) -> None:
        if kind == IOREQ_TYPE_PIO:
            self.stats.unclaimed += 1
            return
        for slot in self.pci.values():
            hit = slot.fn.decode(addr, size)
            if hit is not None:
                slot.fn.bar_write(hit[0], hit[1], size, value)
                return
        for mmio in self.mmio:
            if mmio.base <= addr and addr + size <= mmio.base + mmio.dev.region_size:
                mmio.dev.write(addr - mmio.base, size, value)
                return
        self.stats.unclaimed += 1

    # -- events --------------------------------------------------------------------------
    def drain(self) -> None:
        """Act on every event the transports queued (also those raised outside an ioreq,
        e.g. by an I/O engine completing)."""
        for slot in self.pci.values():
            for event in slot.fn.take_events():
                self._act(slot, event)
        for mmio in self.mmio:
            for event in mmio.dev.take_events():
                self._act(mmio, event)

    def _act(self, slot: PciSlot | MmioSlot, event: TransportEvent) -> None:
        if self.trace is not None:
            self.trace(slot, event)
        try:
            self._apply(slot, event)
        except HypervisorError as err:  # e.g. the guest is being destroyed
            log.warning("domain %d: %s for %s failed: %s", self.domid, event, slot, err)

    def _apply(self, slot: PciSlot | MmioSlot, event: TransportEvent) -> None:
        st = self.stats
        if isinstance(event, MsiMessage):
            st.msis += 1
            self.dm.inject_msi(self.domid, event.address, event.data)
        elif isinstance(event, InterruptLine):
            st.line_changes += 1
            level = int(event.asserted)
            if isinstance(slot, PciSlot):
                seg = slot.sbdf >> 16
                self.dm.set_pci_intx_level(self.domid, seg, slot.bus, slot.device, INTA, level)
            else:
                self.dm.set_irq_level(self.domid, slot.gsi, level)
        elif isinstance(event, BarDecodeChanged) and isinstance(slot, PciSlot):
            self._move_bar(slot, event)
        elif isinstance(event, QueueNotified):
            st.kicks += 1
        elif isinstance(event, DeviceActivated):
            st.activations += 1
        elif isinstance(event, DeviceReset):
            st.resets += 1
        elif isinstance(event, NeedsReset):
            st.needs_reset += 1
            log.info("domain %d: device needs reset: %s", self.domid, event.reason)

    def _move_bar(self, slot: PciSlot, event: BarDecodeChanged) -> None:
        """Claim the BAR's new window from Xen (releasing the old one first)."""
        old = slot.windows.pop(event.bar, None)
        if old is not None:
            self.stats.bar_unmaps += 1
            try:
                self.dm.unmap_io_range_from_ioreq_server(
                    self.domid, self.ioservid, True, old[0], old[0] + old[1] - 1
                )
            except HypervisorError as err:
                log.warning("domain %d: releasing BAR %d failed: %s", self.domid, event.bar, err)
        if event.base is None or event.size <= 0:
            return
        end = event.base + event.size - 1
        try:
            self.dm.map_io_range_to_ioreq_server(self.domid, self.ioservid, True, event.base, end)
        except HypervisorError as err:  # overlaps a window already claimed (EEXIST) ...
            self.stats.map_failures += 1
            log.info(
                "domain %d: BAR %d at %#x not claimed: %s", self.domid, event.bar, event.base, err
            )
            return
        self.stats.bar_maps += 1
        slot.windows[event.bar] = (event.base, event.size)

    def close(self) -> None:
        """Forget the devices (the ioreq server and its ranges go with the server)."""
        self.pci.clear()
        self.mmio.clear()
