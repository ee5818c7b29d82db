"""In-memory stand-ins for the unit tests: a libxendevicemodel that records calls, a
libxenforeignmemory over a bytearray, a virtual interrupt controller, and a device with
a fully driver-writable configuration space."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xenvirtio.hv.api import ForeignMapping, HypervisorError, IoreqServerInfo
from xenvirtio.spec import virtio as S
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.spec.ioreq import IOREQ_READ, STATE_IOREQ_READY, Ioreq
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.virtio.config import ConfigSpace


def ioreq(
    type: int,
    addr: int,
    *,
    size: int = 4,
    read: bool = True,
    data: int = 0,
    count: int = 1,
    ptr: bool = False,
    df: bool = False,
) -> Ioreq:
    direction = IOREQ_READ if read else 0
    return Ioreq(addr, data, count, size, 0, STATE_IOREQ_READY, ptr, direction, df, type)


@dataclass
class FakeDeviceModel:
    """Records every call; ``refuse`` holds MMIO starts whose mapping fails (EEXIST)."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    refuse: set[int] = field(default_factory=set)
    broken: bool = False  # every interrupt injection fails (the guest is going away)

    def _record(self, *call: Any) -> None:
        if self.broken and call[0] in ("inject_msi", "set_pci_intx_level", "set_irq_level"):
            raise HypervisorError(errno.ESRCH, "no such domain")
        self.calls.append(call)

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == name]

    def map_io_range_to_ioreq_server(
        self, domid: int, id: int, is_mmio: bool, start: int, end: int
    ) -> None:
        if start in self.refuse:
            raise HypervisorError(errno.EEXIST, "overlaps a mapped range")
        self._record("map", domid, id, is_mmio, start, end)

    def unmap_io_range_from_ioreq_server(
        self, domid: int, id: int, is_mmio: bool, start: int, end: int
    ) -> None:
        self._record("unmap", domid, id, is_mmio, start, end)

    def inject_msi(self, domid: int, msi_addr: int, msi_data: int) -> None:
        self._record("inject_msi", domid, msi_addr, msi_data)

    def set_irq_level(self, domid: int, irq: int, level: int) -> None:
        self._record("set_irq_level", domid, irq, level)

    def set_pci_intx_level(
        self, domid: int, segment: int, bus: int, device: int, intx: int, level: int
    ) -> None:
        self._record("set_pci_intx_level", domid, segment, bus, device, intx, level)

    # the rest of the port is not used by the dispatcher
    def create_ioreq_server(self, domid: int, handle_bufioreq: int) -> int:
        raise NotImplementedError

    def get_ioreq_server_info(self, domid: int, id: int) -> IoreqServerInfo:
        raise NotImplementedError


class FakeForeignMemory:
    """Maps frames of one bytearray; frames in ``refuse`` (or past the end) fail."""

    def __init__(self, ram: bytearray) -> None:
        self.ram = memoryview(ram)
        self.refuse: set[int] = set()
        self.mapped: list[tuple[int, ...]] = []
        self.unmapped: list[tuple[int, ...]] = []

    def map(self, domid: int, prot: int, frames: Sequence[int]) -> ForeignMapping:
        frames = tuple(frames)
        limit = len(self.ram) // XEN_PAGE_SIZE
        if any(f >= limit or f in self.refuse for f in frames):
            raise HypervisorError(errno.EINVAL, "bad frame")
        assert frames == tuple(range(frames[0], frames[-1] + 1))
        self.mapped.append(frames)
        view = self.ram[frames[0] * XEN_PAGE_SIZE : (frames[-1] + 1) * XEN_PAGE_SIZE]
        return ForeignMapping(
            view,
            lambda: self.unmapped.append(frames),
            domid=domid,
            frames=frames,
            writable=True,
        )


class ScratchDevice(EchoDevice):
    """An echo device whose 16-byte configuration the driver may write anywhere."""

    def __init__(self) -> None:
        super().__init__(features=1 << S.VIRTIO_F_VERSION_1)
        self._scratch = ConfigSpace(bytes(16), driver_writable=[(0, 16)])

    @property
    def config(self) -> ConfigSpace:
        return self._scratch
