"""A hostile HVM guest kernel: for ``duration`` seconds it throws random PCI
configuration writes (BARs, command, MSI-X, capabilities), random BAR and virtio-mmio
accesses of every width, BARs moved over its own virtio-mmio window, devices set up and
then fed scribbled rings or queue addresses outside its RAM, and port I/O nobody claims.

What it reports (``data/ioreq/result``): how many operations it made, and how many of
its accesses timed out, i.e. were never answered by the device model (there must be
none). The device model must survive all of it and keep serving its other guests.
"""

from __future__ import annotations

import errno
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.guest import Guest
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import pci as P
from xenvirtio.spec.ioreq import IOREQ_READ, IOREQ_TYPE_PIO, IOREQ_WRITE
from xenvirtio.testing.ioreq_guest import RINGS, Report, contiguous_pages, run_reported
from xenvirtio.transport.ioreq.guest_bus import (
    HVM_PCI_MEM_END,
    HVM_PCI_MEM_START,
    IoreqMmioBus,
    IoreqPciBus,
    firmware_setup,
)
from xenvirtio.transport.mmio.driver import MmioProbeError, VirtioMmioDriver
from xenvirtio.transport.pci.bios import PciEnumerationError, read_bar_address
from xenvirtio.transport.pci.driver import PciProbeError, VirtioPciDriver
from xenvirtio.transport.probe import ProbeError, attach_queue, probe
from xenvirtio.virtio.queue import VirtqueueError

EXPECTED = (
    PciProbeError,
    PciEnumerationError,
    MmioProbeError,
    ProbeError,
    VirtqueueError,
    ValueError,
)
HOT_REGISTERS = (P.PCI_COMMAND, P.PCI_BASE_ADDRESS_0, P.PCI_BASE_ADDRESS_0 + 4, 0x40, 0x42, 0x44)


@dataclass
class Hostile:
    """What the actions share."""

    rng: random.Random
    bus: IoreqPciBus
    mbus: IoreqMmioBus
    mem: FlatMemory
    bdfs: list[int]
    mmio_base: int
    area: int  # 16 pages of our RAM for rings we then scribble over

    def bdf(self) -> int:
        return self.rng.choice(self.bdfs) if self.rng.random() < 0.9 else self.rng.randrange(256)

    def value(self) -> int:
        return self.rng.getrandbits(64)

    def size(self) -> int:
        return self.rng.choice((1, 2, 4, 8))


def cfg_write(h: Hostile) -> None:
    offset = h.rng.choice(HOT_REGISTERS) if h.rng.random() < 0.5 else h.rng.randrange(0x1100)
    h.bus.cfg_write(h.bdf(), offset, h.rng.choice((1, 2, 4)), h.value())


def cfg_read(h: Hostile) -> None:
    h.bus.cfg_read(h.bdf(), h.rng.randrange(0x1100), h.rng.choice((1, 2, 4)))


def bar_access(h: Hostile) -> None:
    base = read_bar_address(h.bus, h.bdf(), 0)
    addr = base + h.rng.randrange(-16, 0x8000 + 16)
    if h.rng.random() < 0.5:
        h.bus.mmio_write(addr, h.size(), h.value())
    else:
        h.bus.mmio_read(addr, h.size())


def mmio_access(h: Hostile) -> None:
    addr = h.mmio_base + h.rng.randrange(-16, 0x220)
    if h.rng.random() < 0.5:
        h.mbus.write(addr, h.size(), h.value())
    else:
        h.mbus.read(addr, h.size())


def stray_access(h: Hostile) -> None:
    addr = HVM_PCI_MEM_START + h.rng.randrange(HVM_PCI_MEM_END - HVM_PCI_MEM_START)
    h.bus.mmio_write(addr, h.size(), h.value())
    port = h.rng.randrange(0x10000)
    h.bus.io.access(IOREQ_TYPE_PIO, port, h.rng.choice((1, 2, 4)), IOREQ_READ)
    h.bus.io.access(IOREQ_TYPE_PIO, port, 1, IOREQ_WRITE, h.value())


def bar_over_window(h: Hostile) -> None:
    """Move BAR 0 onto our virtio-mmio window (the device model cannot claim it twice)."""
    bdf = h.rng.choice(h.bdfs)
    h.bus.cfg_write(bdf, P.PCI_BASE_ADDRESS_0, 4, h.mmio_base)
    h.bus.cfg_write(bdf, P.PCI_BASE_ADDRESS_0 + 4, 4, 0)
    h.bus.cfg_write(bdf, P.PCI_COMMAND, 2, P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER)


def replace_bars(h: Hostile) -> None:
    firmware_setup(h.bus)  # put everything back where firmware wants it


def _driver(h: Hostile) -> VirtioPciDriver | VirtioMmioDriver:
    if h.rng.random() < 0.5:
        replace_bars(h)
        return VirtioPciDriver(h.bus, h.rng.choice(h.bdfs))
    return VirtioMmioDriver(h.mbus, h.mmio_base)


def scribbled_ring(h: Hostile) -> None:
    """Set a queue up properly, then write garbage over it and kick."""
    drv = _driver(h)

    def setup(features: int) -> None:
        attach_queue(drv, h.mem, 0, features, h.area, 64)

    probe(drv, RINGS[h.rng.choice(sorted(RINGS))], setup)
    for _ in range(h.rng.randint(1, 4)):
        h.mem.write(h.area + h.rng.randrange(8192), h.rng.randbytes(h.rng.randint(1, 256)))
        drv.notify(0)


def queue_outside_ram(h: Hostile) -> None:
    """Queue addresses the guest does not have (the device must refuse, not crash)."""
    drv = _driver(h)
    far = h.rng.choice((1 << 40, (1 << 64) - 4096, 0x7FFF_F000, h.rng.getrandbits(64)))

    def setup(features: int) -> None:
        drv.setup_queue(0, 64, far, far + 1024, far + 2048)
        drv.enable_queue(0)

    probe(drv, RINGS["split"], setup)
    drv.notify(0)


ACTIONS: list[tuple[Callable[[Hostile], None], int]] = [
    (cfg_write, 30),
    (cfg_read, 10),
    (bar_access, 25),
    (mmio_access, 20),
    (stray_access, 5),
    (bar_over_window, 2),
    (replace_bars, 3),
    (scribbled_ring, 3),
    (queue_outside_ram, 2),
]


def hostile_kernel(guest: Guest, cmdline: str) -> int:
    """Command line: {"seed", "duration", "base"} (base: our virtio-mmio window)."""
    args = json.loads(cmdline)
    return run_reported(guest, lambda report: _hostile(guest, args, report))


def _hostile(guest: Guest, args: dict[str, Any], report: Report) -> None:
    rng = random.Random(args["seed"])
    bus = IoreqPciBus(guest.vcpu_io, timeout=5.0)
    bdfs = [f.bdf for f in firmware_setup(bus)]
    if not bdfs:
        raise RuntimeError("no PCI function to attack")
    h = Hostile(
        rng,
        bus,
        IoreqMmioBus(guest.vcpu_io, timeout=5.0),
        FlatMemory(buffer=guest.memory),
        bdfs,
        args["base"],
        contiguous_pages(guest, 16),
    )
    actions, weights = zip(*ACTIONS, strict=True)
    counts: Counter[str] = Counter()
    start = time.monotonic()
    deadline = start + args["duration"]
    while time.monotonic() < deadline:
        action = rng.choices(actions, weights)[0]
        try:
            action(h)
            counts["ok"] += 1
        except HypervisorError as err:
            counts["timeouts" if err.errno == errno.ETIMEDOUT else "refused"] += 1
        except EXPECTED:
            counts["driver_errors"] += 1
        counts[action.__name__] += 1
    end = time.monotonic()
    accesses = bus.accesses + h.mbus.accesses
    report.put("result", {**counts, "start": start, "end": end, "accesses": accesses})
