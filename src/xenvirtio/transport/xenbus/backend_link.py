"""`BackendLink`: what a backend holds while Connected to one frontend.

Built by `connect` from a validated `FrontendSetup`: guest memory over a fresh gnttab
handle (grant DMA) or foreign mappings (``grant-usage`` = 0), the ring areas checked, one
interdomain event channel per enabled queue, and a `DeviceTransportCore` run through the
virtio initialisation the frontend's keys describe, ending with DRIVER_OK (the device is
activated). `close` undoes all of it; closing the gnttab handle unmaps every grant,
whatever the device still holds.

Nothing here trusts the frontend: a ref it did not grant, a port it did not offer, a
ring that does not fit its pages all raise `ConnectError` before the device runs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.hv.api import PROT_READ, PROT_WRITE, Evtchn, Hypervisor, MappedMemory
from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.mem.grant_dma import XEN_PAGE_SHIFT, GrantDmaMemory, grant_dma_addr
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.transport.api import VirtioDevice
from xenvirtio.transport.core import DeviceTransportCore
from xenvirtio.transport.events import EventQueue, NeedsReset
from xenvirtio.transport.queue_regs import QueueField
from xenvirtio.transport.xenbus.keys import TRANSPORT_UNSUPPORTED
from xenvirtio.transport.xenbus.memory import FrameMemory
from xenvirtio.transport.xenbus.negotiation import device_view
from xenvirtio.transport.xenbus.records import FrontendSetup
from xenvirtio.virtio.queue import RingFormat, packed_ring_sizes, split_ring_sizes

log = logging.getLogger("xenvirtio.xenbus.virtio")

_ADDR_FIELDS = (
    ("desc", QueueField.DESC_LO, QueueField.DESC_HI),
    ("driver", QueueField.DRIVER_LO, QueueField.DRIVER_HI),
    ("device", QueueField.DEVICE_LO, QueueField.DEVICE_HI),
)


class ConnectError(OSError):
    """The frontend's setup cannot be connected; the backend fails the device."""

    def __init__(self, message: str, err: int = errno.EINVAL) -> None:
        super().__init__(err, message)

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class LinkParams:
    fe_domid: int
    grant_usage: bool
    max_mapped_pages: int


class _Pages:
    """Maps the frontend's pages on demand, at most ``limit`` of them (each end's
    persistent grant set is bounded by ``max-mapped-pages``)."""

    def __init__(self, hv: Hypervisor, params: LinkParams) -> None:
        self.params = params
        self.gnttab = hv.open_gnttab() if params.grant_usage else None
        self.foreign = None if params.grant_usage else hv.open_foreignmemory()
        if self.gnttab is not None:
            self.gnttab.set_max_grants(params.max_mapped_pages)
        self.mappings: list[MappedMemory] = []

    def _room(self, addr: int) -> None:
        if len(self.mappings) >= self.params.max_mapped_pages:
            limit = self.params.max_mapped_pages
            raise GuestMemoryError(addr, 0, f"more than max-mapped-pages ({limit}) in use")

    def grant(self, gref: int) -> memoryview:
        assert self.gnttab is not None
        addr = grant_dma_addr(gref)
        self._room(addr)
        error: OSError | None = None
        for writable in (True, False):  # a buffer the device only reads may be read-only
            try:
                mapping = self.gnttab.map_grant_ref(self.params.fe_domid, gref, writable)
            except OSError as exc:
                error = error or exc
                continue
            self.mappings.append(mapping)
            return mapping.memory
        raise GuestMemoryError(addr, 0, f"grant {gref} refused: {error}")

    def frame(self, gfn: int) -> memoryview:
        assert self.foreign is not None
        addr = gfn << XEN_PAGE_SHIFT
        self._room(addr)
        try:
            mapping = self.foreign.map(self.params.fe_domid, PROT_READ | PROT_WRITE, [gfn])
        except OSError as exc:
            raise GuestMemoryError(addr, 0, f"frame {gfn:#x} refused: {exc}") from None
        self.mappings.append(mapping)
        return mapping.memory

    def memory(self) -> GuestMemory:
        if self.params.grant_usage:
            return GrantDmaMemory(self.grant)
        return FrameMemory(self.frame)

    def close(self) -> None:
        for mapping in self.mappings:
            with contextlib.suppress(OSError, ValueError, BufferError):
                mapping.unmap()
        self.mappings.clear()
        for handle in (self.gnttab, self.foreign):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()


class BackendLink:
    """One connection: memory, ports and the activated transport core."""

    def __init__(
        self,
        hv: Hypervisor,
        evtchn: Evtchn,
        device: VirtioDevice,
        params: LinkParams,
        events: EventQueue,
        config_changed: Callable[[], None],
    ) -> None:
        self.evtchn = evtchn
        self.device = device
        self.params = params
        self.events = events
        self._config_changed = config_changed
        self.pages = _Pages(hv, params)
        self.mem = self.pages.memory()
        self.core = DeviceTransportCore(
            device, self.mem, self, events, unsupported_features=TRANSPORT_UNSUPPORTED
        )
        self.port_of_queue: dict[int, int] = {}
        self.queue_of_port: dict[int, int] = {}

    # -- InterruptSignals for the core (any thread) --------------------------------------
    def queue_interrupt(self, index: int) -> None:
        port = self.port_of_queue.get(index)
        if port is not None:
            with contextlib.suppress(OSError):
                self.evtchn.notify(port)

    def config_interrupt(self) -> None:
        self._config_changed()

    def reset_interrupts(self) -> None:
        pass

    # -- connecting ----------------------------------------------------------------------
    def connect(self, setup: FrontendSetup) -> None:
        """Check the rings, bind the ports, run the device up to DRIVER_OK."""
        fmt = RingFormat.from_features(setup.features)
        for q in setup.queues:
            self._check_ring(fmt, q.index, q.size, (q.desc, q.driver, q.device))
        for q in setup.queues:
            try:
                port = self.evtchn.bind_interdomain(self.params.fe_domid, q.event_channel)
            except OSError as exc:
                msg = f"queue {q.index}: event channel {q.event_channel}: {exc}"
                raise ConnectError(msg) from None
            self.port_of_queue[q.index] = port
            self.queue_of_port[port] = q.index
        self._initialise(setup)

    def _check_ring(self, fmt: RingFormat, index: int, size: int, addrs: tuple[int, ...]) -> None:
        sizes = packed_ring_sizes(size) if fmt is RingFormat.PACKED else split_ring_sizes(size)
        try:
            for addr, length, write in zip(addrs, sizes, (False, False, True), strict=True):
                self.mem.check(addr, length, write)
        except GuestMemoryError as exc:
            raise ConnectError(f"queue {index}: ring not accessible: {exc}") from None

    def _initialise(self, setup: FrontendSetup) -> None:
        """virtio 1.2 3.1.1 on the core, as the frontend's keys describe it."""
        core = self.core
        ack = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER
        core.write_status(DeviceStatus.ACKNOWLEDGE)
        core.write_status(ack)
        features = device_view(setup.features, self.device.avail_features)
        for word in range(2):
            core.driver_feature_select = word
            core.write_driver_feature_word(features >> (32 * word))
        core.write_status(ack | DeviceStatus.FEATURES_OK)
        if not core.status & DeviceStatus.FEATURES_OK:
            raise ConnectError(f"driver-features {setup.features:#x} refused by the device")
        for q in setup.queues:
            core.write_queue(q.index, QueueField.SIZE, q.size)
            for attr, lo, hi in _ADDR_FIELDS:
                addr = int(getattr(q, attr))
                core.write_queue(q.index, lo, addr & 0xFFFFFFFF)
                core.write_queue(q.index, hi, addr >> 32)
            core.write_queue(q.index, QueueField.ENABLE, 1)
        core.write_status(ack | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK)
        if core.status & DeviceStatus.DEVICE_NEEDS_RESET:
            reasons = [e.reason for e in self.events.take() if isinstance(e, NeedsReset)]
            raise ConnectError(f"activation failed: {'; '.join(reasons) or 'needs reset'}")

    # -- running -------------------------------------------------------------------------
    def kick(self, port: int) -> None:
        """The frontend notified ``port``: an available buffer notification."""
        index = self.queue_of_port.get(port)
        if index is not None:
            self.core.notify(index, index)

    @property
    def needs_reset(self) -> bool:
        return bool(self.core.status & DeviceStatus.DEVICE_NEEDS_RESET)

    def close(self) -> None:
        """Reset the device, unbind the ports, unmap every page. Idempotent."""
        if self.core.status:
            try:
                self.core.write_status(0)
            except Exception:
                log.exception("device reset failed")
        for port in list(self.queue_of_port):
            with contextlib.suppress(OSError):
                self.evtchn.unbind(port)
        self.port_of_queue.clear()
        self.queue_of_port.clear()
        clear = getattr(self.mem, "clear", None)
        if clear is not None:
            clear()
        self.pages.close()
