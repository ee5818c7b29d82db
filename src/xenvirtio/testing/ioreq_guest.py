"""HVM guest kernels that drive virtio devices through ioreqs (run in emu domain
processes; ``kernel(guest, cmdline)`` with a JSON command line).

The guest boots as a PV-on-HVM guest would: firmware places the PCI BARs
(`firmware_setup`), the driver finds its function or virtio-mmio window, programs MSI-X
with pirq-carrying messages (`GuestIrqRouter`) or uses INT#x / its GSI, and every
register access is one ioreq to the device model in dom0. Results go to XenStore under
``/local/domain/<id>/data/ioreq/`` (JSON values), so the test in dom0 can check them;
a failure's traceback goes to ``.../error``.
"""

from __future__ import annotations

import json
import random
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xenvirtio.hv.api.guest import Guest
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.spec.virtio_pci import virtio_pci_device_id
from xenvirtio.testing.echo_device import ECHO_CFG_LABEL, ECHO_CFG_XOR_KEY, ECHO_DEVICE_ID
from xenvirtio.transport.api import InterruptFlags
from xenvirtio.transport.dma import DmaPages
from xenvirtio.transport.ioreq.guest_bus import IoreqMmioBus, IoreqPciBus, firmware_setup
from xenvirtio.transport.ioreq.guest_irq import GuestIrqRouter, PirqMsiRoute
from xenvirtio.transport.mmio.driver import VirtioMmioDriver
from xenvirtio.transport.pci.driver import VirtioPciDriver
from xenvirtio.transport.probe import attach_queue, kick, probe, read_config_consistent
from xenvirtio.virtio.queue import DriverQueue

STORE_DIR = "data/ioreq"
WAIT = 10.0
SLOT = 512  # bytes per buffer half (readable payload, writable echo)
RINGS = {
    "split": 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_RING_F_EVENT_IDX,
    "packed": 1 << S.VIRTIO_F_VERSION_1
    | 1 << S.VIRTIO_RING_F_EVENT_IDX
    | 1 << S.VIRTIO_F_RING_PACKED,
}


class Report:
    """JSON values under ``/local/domain/<id>/data/ioreq`` (the guest may write there)."""

    def __init__(self, guest: Guest) -> None:
        store = guest.hypervisor.store
        if store is None:
            raise RuntimeError("the guest has no XenStore")
        self.store = store
        self.base = f"/local/domain/{guest.domid}/{STORE_DIR}"

    def put(self, key: str, value: object) -> None:
        self.store.write(f"{self.base}/{key}", json.dumps(value))


def run_reported(guest: Guest, body: Callable[[Report], None]) -> int:
    """Run ``body``; 0 if it returned, 1 (and its traceback in XenStore) if it raised."""
    report = Report(guest)
    try:
        body(report)
    except Exception:
        report.put("error", traceback.format_exc())
        return 1
    return 0


def contiguous_pages(guest: Guest, count: int) -> int:
    """Guest-physical address of ``count`` fresh, physically contiguous pages."""
    gfns = guest.alloc_pages(count)
    if gfns != list(range(gfns[0], gfns[0] + count)):
        raise RuntimeError(f"pages {gfns[:4]}... are not contiguous")
    return gfns[0] * XEN_PAGE_SIZE


@dataclass
class Irq:
    """Counts the interrupts a device's handler saw; ``hook`` is the driver's handler."""

    count: int = 0
    hook: Callable[[], None] | None = None

    def fire(self) -> None:
        self.count += 1
        if self.hook is not None:
            self.hook()


@dataclass
class GuestDevice:
    """A guest driver's transport, its interrupt counter and (MSI-X) its route."""

    drv: VirtioPciDriver | VirtioMmioDriver
    irq: Irq
    route: PirqMsiRoute | None = None
    bus_accesses: Callable[[], int] = field(default=lambda: 0)


def open_device(
    guest: Guest, router: GuestIrqRouter, spec: dict[str, Any], dma: DmaPages | None = None
) -> GuestDevice:
    """Find the device ``spec`` names and wire its interrupt: ``kind`` pci-msix |
    pci-intx (``device_id`` = virtio id) or mmio (``base``, ``gsi``). ``dma`` is the
    memory its driver may use (the transport's ``dma``)."""
    irq = Irq()
    if spec["kind"] == "mmio":
        mbus = IoreqMmioBus(guest.vcpu_io)
        router.bind_gsi(spec["gsi"], irq.fire)
        return GuestDevice(
            VirtioMmioDriver(mbus, spec["base"], dma=dma), irq, None, lambda: mbus.accesses
        )
    bus = IoreqPciBus(guest.vcpu_io)
    wanted = virtio_pci_device_id(spec["device_id"])
    found = [f for f in firmware_setup(bus) if f.device_id == wanted]
    if not found:
        raise RuntimeError(f"no PCI function with device id {wanted:#x}")
    bdf = found[0].bdf
    if spec["kind"] == "pci-intx":
        router.bind_pci_intx(bdf, 0, irq.fire)
        return GuestDevice(VirtioPciDriver(bus, bdf, dma=dma), irq, None, lambda: bus.accesses)
    route = router.msi_route()
    drv = VirtioPciDriver(bus, bdf, msi=route, dma=dma)

    def on_msi(address: int, data: int) -> None:
        if drv.handle_msi(address, data):
            irq.fire()

    route.set_handler(on_msi)
    return GuestDevice(drv, irq, route, lambda: bus.accesses)


class EchoSession:
    """Echo traffic over one queue, verified byte for byte."""

    def __init__(
        self, dev: GuestDevice, mem: FlatMemory, router: GuestIrqRouter, area: int, seed: int
    ) -> None:
        self.dev, self.mem, self.router = dev, mem, router
        self.ring_base, self.buf_base = area, area + 8 * XEN_PAGE_SIZE
        self.rng = random.Random(seed)
        self.queue: DriverQueue[Any] | None = None
        self.echoed = 0
        self.interrupts = 0

    def bring_up(self, ring: str, key: int, size: int = 64) -> int:
        queues: list[DriverQueue[Any]] = []

        def setup(features: int) -> None:
            q = attach_queue(self.dev.drv, self.mem, 0, features, self.ring_base, size)
            queues.append(q)
            self.dev.drv.write_config(ECHO_CFG_XOR_KEY, bytes([key]))

        features = probe(self.dev.drv, RINGS[ring], setup)
        if features != RINGS[ring]:
            raise AssertionError(f"negotiated {features:#x}, wanted {RINGS[ring]:#x}")
        self.queue, self.key = queues[0], key
        return features

    def wait_interrupt(self, seen: int) -> InterruptFlags:
        """Wait for an interrupt after ``seen``; acknowledge it and say what it carried."""
        if not self.router.wait_for(lambda: self.dev.irq.count > seen, WAIT):
            raise AssertionError("no interrupt arrived")
        self.interrupts += 1
        return self.dev.drv.ack_interrupt()

    def round(self, count: int) -> None:
        """``count`` buffers out, one interrupt, every echo checked."""
        q, mem = self.queue, self.mem
        assert q is not None
        payloads = [self.rng.randbytes(self.rng.randint(1, SLOT)) for _ in range(count)]
        for i, data in enumerate(payloads):
            src = self.buf_base + 2 * i * SLOT
            mem.write(src, data)
            mem.write(src + SLOT, bytes(SLOT))
            q.add(mem, [(src, len(data))], [(src + SLOT, SLOT)], i)
        seen = self.dev.irq.count
        kick(self.dev.drv, q, mem)
        flags = self.wait_interrupt(seen)
        if not flags & InterruptFlags.QUEUE:
            raise AssertionError(f"interrupt without the queue bit: {flags!r}")
        used = dict(q.get_used_batch(mem, count + 1))
        if sorted(used) != list(range(count)):
            raise AssertionError(f"used tokens {sorted(used)} after {count} buffers")
        for i, data in enumerate(payloads):
            expect = bytes(b ^ self.key for b in data)
            got = mem.read(self.buf_base + (2 * i + 1) * SLOT, used[i])
            if got != expect:
                raise AssertionError(f"buffer {i}: echo differs")
        self.echoed += count

    def config_change(self, report: Report) -> int:
        """Tell dom0 we wait, then take the configuration interrupt; returns the label."""
        seen = self.dev.irq.count
        report.put("phase", "config-wait")
        flags = self.wait_interrupt(seen)
        if not flags & InterruptFlags.CONFIG:
            raise AssertionError(f"interrupt without the config bit: {flags!r}")
        raw = read_config_consistent(self.dev.drv, ECHO_CFG_LABEL, 8)
        return int(struct.unpack("<Q", raw)[0])


def echo_kernel(guest: Guest, cmdline: str) -> int:
    """Echo rounds over each ring format in turn (resetting the device in between), more
    rounds until ``duration`` s passed, then a configuration change. Command line:
    {"kind", "base", "gsi", "rings", "rounds", "buffers", "seed", "config", "duration"}."""
    args = json.loads(cmdline)
    return run_reported(guest, lambda report: _echo(guest, args, report))


def _echo(guest: Guest, args: dict[str, Any], report: Report) -> None:
    start = time.monotonic()
    router = GuestIrqRouter.of_guest(guest)
    dev = open_device(guest, router, {"device_id": ECHO_DEVICE_ID, **args})
    mem = FlatMemory(buffer=guest.memory)
    session = EchoSession(dev, mem, router, contiguous_pages(guest, 24), args["seed"])
    rounds = 0
    for n, ring in enumerate(args["rings"]):
        if n:
            dev.drv.reset()
            if dev.drv.get_status() != 0:
                raise AssertionError("status not 0 after reset")
        session.bring_up(ring, key=0x40 + n)
        for _ in range(args["rounds"]):
            session.round(args["buffers"])
            rounds += 1
    while time.monotonic() < start + args.get("duration", 0):  # keep going (last ring)
        session.round(args["buffers"])
        rounds += 1
    label = session.config_change(report) if args.get("config") else None
    dev.drv.reset()  # leave the device quiet: it stops using our memory
    result = _summary(session, router, rounds, label)
    report.put("result", {**result, "start": start, "end": time.monotonic()})


def _summary(
    session: EchoSession, router: GuestIrqRouter, rounds: int, label: int | None
) -> dict[str, Any]:
    dev = session.dev
    return {
        "echoed": session.echoed,
        "rounds": rounds,
        "interrupts": session.interrupts,
        "irq_count": dev.irq.count,
        "label": label,
        "pirqs": sorted(dev.route.pirqs.values()) if dev.route else [],
        "ports": sorted(dev.route.ports.values()) if dev.route else [],
        "msi_delivered": router.counts.msi,
        "lines": router.counts.lines,
        "spurious": router.counts.spurious,
        "accesses": dev.bus_accesses(),
    }
