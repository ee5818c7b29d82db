"""`IoreqDispatcher` alone (no hypervisor): ioreq decoding, reps with the direction flag
and data pointers, refusals, BAR windows claimed and released, interrupts turned into
device-model calls, and failures kept inside."""

from __future__ import annotations

import pytest
from ioreq_fakes import FakeDeviceModel, ScratchDevice, ioreq

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import pci as P
from xenvirtio.spec import virtio_mmio as M
from xenvirtio.spec import virtio_pci as VP
from xenvirtio.spec.ioreq import (
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_INVALIDATE,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    XEN_DMOP_PCI_SBDF,
    pci_config_addr,
)
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.transport.events import InterruptLine, MsiMessage
from xenvirtio.transport.ioreq.access import MAX_REPS
from xenvirtio.transport.ioreq.dispatch import IoreqDispatcher, MmioSlot, PciSlot
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.pci.bios import MmioWindow, assign_bars
from xenvirtio.transport.pci.device import BAR_SIZE, VirtioPciFunction

DOMID, SERVER = 7, 1
SBDF = XEN_DMOP_PCI_SBDF(0, 0, 4, 0)
MMIO, GSI = 0x0200_0000, 33
WINDOW = (0xF000_0000, 0x0100_0000)
BUF = 0x1000  # a guest buffer for data pointers


class Rig:
    def __init__(self) -> None:
        self.dm = FakeDeviceModel()
        self.ram = FlatMemory(1 << 20)
        self.invalidated = 0
        self.d = IoreqDispatcher(self.dm, DOMID, SERVER, self.ram, self._invalidate)
        self.fn = VirtioPciFunction(EchoDevice(), self.ram)
        self.mmio = VirtioMmioDevice(ScratchDevice(), self.ram)
        self.d.add_pci(PciSlot(SBDF, self.fn))
        self.d.add_mmio(MmioSlot(MMIO, self.mmio, GSI))

    def _invalidate(self) -> None:
        self.invalidated += 1

    # a PciBus whose every access is one ioreq through the dispatcher
    def cfg_read(self, bdf: int, offset: int, size: int) -> int:
        return self.d.handle(ioreq(IOREQ_TYPE_PCI_CONFIG, pci_config_addr(bdf, offset), size=size))

    def cfg_write(self, bdf: int, offset: int, size: int, value: int) -> None:
        addr = pci_config_addr(bdf, offset)
        self.d.handle(ioreq(IOREQ_TYPE_PCI_CONFIG, addr, size=size, read=False, data=value))

    def mmio_read(self, address: int, size: int) -> int:
        return self.d.handle(ioreq(IOREQ_TYPE_COPY, address, size=size))

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self.d.handle(ioreq(IOREQ_TYPE_COPY, address, size=size, read=False, data=value))


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_pci_config_is_decoded_from_the_sbdf(rig: Rig) -> None:
    assert rig.cfg_read(SBDF, P.PCI_VENDOR_ID, 2) == VP.VIRTIO_PCI_VENDOR_ID
    assert rig.cfg_read(SBDF, P.PCI_DEVICE_ID, 2) == VP.virtio_pci_device_id(63)
    assert rig.cfg_read(XEN_DMOP_PCI_SBDF(0, 0, 5, 0), 0, 4) == 0xFFFF_FFFF  # not ours
    assert rig.cfg_read(XEN_DMOP_PCI_SBDF(1, 0, 4, 0), 0, 2) == 0xFFFF  # other segment
    assert rig.d.stats.pci_config == 4 and rig.d.stats.unclaimed == 2


def test_bar_windows_follow_the_guest(rig: Rig) -> None:
    (bar,) = assign_bars(rig, SBDF, MmioWindow(*WINDOW))
    end = bar.base + BAR_SIZE - 1
    assert rig.dm.named("map") == [(DOMID, SERVER, True, bar.base, end)]
    assert rig.mmio_read(bar.base + VP.VIRTIO_PCI_COMMON_NUMQ, 2) == 1  # common cfg, via Xen
    rig.cfg_write(SBDF, P.PCI_COMMAND, 2, 0)  # decoding off: the window is released
    assert rig.dm.named("unmap") == [(DOMID, SERVER, True, bar.base, end)]
    assert rig.mmio_read(bar.base, 2) == 0xFFFF
    rig.dm.refuse.add(MMIO)  # the guest moves BAR 0 onto the claimed virtio-mmio window
    rig.cfg_write(SBDF, P.PCI_BASE_ADDRESS_0, 4, MMIO)
    rig.cfg_write(SBDF, P.PCI_COMMAND, 2, P.PCI_COMMAND_MEMORY)
    assert rig.d.stats.map_failures == 1 and rig.d.pci[SBDF].windows == {}
    rig.cfg_write(SBDF, P.PCI_COMMAND, 2, 0)
    assert len(rig.dm.named("unmap")) == 1  # nothing to release: it was never claimed


def test_reps_move_data_through_guest_buffers(rig: Rig) -> None:
    cfg = MMIO + M.VIRTIO_MMIO_CONFIG
    rig.ram.write(BUF, bytes(range(1, 17)))
    # rep movsd into the device: four 4-byte elements from the guest buffer
    rig.d.handle(ioreq(IOREQ_TYPE_COPY, cfg, size=4, count=4, read=False, ptr=True, data=BUF))
    assert rig.mmio.core.device.config.read(0, 16) == bytes(range(1, 17))
    # rep movsb back out with the direction flag: walks down from the last byte
    back = BUF + 0x100
    req = ioreq(IOREQ_TYPE_COPY, cfg + 15, size=1, count=16, ptr=True, data=back + 15, df=True)
    assert rig.d.handle(req) == back + 15  # the pointer comes back unchanged
    assert rig.ram.read(back, 16) == bytes(range(1, 17))
    # without a pointer a rep write stores the value in every element
    rig.d.handle(ioreq(IOREQ_TYPE_COPY, cfg, size=2, count=8, read=False, data=0xA5A5))
    assert rig.mmio.core.device.config.read(0, 16) == b"\xa5" * 16
    assert rig.d.stats.copy == 3 and rig.d.stats.refused == 0


@pytest.mark.parametrize(
    "req",
    [
        ioreq(IOREQ_TYPE_COPY, MMIO + 0x100, size=4, count=MAX_REPS + 1, read=False, data=1),
        ioreq(IOREQ_TYPE_COPY, MMIO + 0x100, size=4, count=0, read=False, data=1),
        ioreq(IOREQ_TYPE_COPY, MMIO + 0x100, size=3, read=False, data=1),
        ioreq(IOREQ_TYPE_PCI_CONFIG, pci_config_addr(SBDF, 4), size=8, read=False, data=6),
        ioreq(IOREQ_TYPE_PCI_CONFIG, pci_config_addr(SBDF, 4), read=False, data=6, ptr=True),
        ioreq(5, MMIO + 0x100, read=False, data=1),
    ],
    ids=["too-many-reps", "no-reps", "size-3", "cfg-size-8", "cfg-pointer", "type-5"],
)
def test_malformed_ioreqs_are_refused(rig: Rig, req: object) -> None:
    before = rig.mmio.core.device.config.read(0, 16), rig.fn.config_read(P.PCI_COMMAND, 2)
    rig.d.handle(req)  # type: ignore[arg-type]
    assert rig.d.stats.refused == 1
    assert (rig.mmio.core.device.config.read(0, 16), rig.fn.config_read(4, 2)) == before


def test_a_bad_data_pointer_stops_the_rep(rig: Rig) -> None:
    cfg = MMIO + M.VIRTIO_MMIO_CONFIG
    outside = (1 << 20) - 2  # the third 1-byte element leaves guest RAM
    rig.ram.write(outside, b"\x11\x22")
    req = ioreq(IOREQ_TYPE_COPY, cfg, size=1, count=4, read=False, ptr=True, data=outside)
    assert rig.d.handle(req) == outside
    assert rig.mmio.core.device.config.read(0, 4) == b"\x11\x22\x00\x00"
    assert rig.d.stats.refused == 1 and rig.d.stats.device_errors == 0


def test_ports_invalidate_and_other_types(rig: Rig) -> None:
    assert rig.d.handle(ioreq(IOREQ_TYPE_PIO, 0xCF8, size=4)) == 0xFFFF_FFFF
    assert rig.d.handle(ioreq(IOREQ_TYPE_INVALIDATE, 0, read=False, data=0xFFFF_FFFF)) >= 0
    assert rig.invalidated == 1 and rig.d.stats.invalidate == 1
    assert rig.d.handle(ioreq(IOREQ_TYPE_COPY, 0xDEAD_0000, size=8)) == (1 << 64) - 1
    assert rig.d.stats.pio == 1 and rig.d.stats.unclaimed == 2


def test_interrupts_become_device_model_calls(rig: Rig) -> None:
    rig.fn.events.push(MsiMessage(0xFEE0_3000, 0x700))
    rig.fn.events.push(InterruptLine(True))
    rig.mmio.events.push(InterruptLine(True))
    rig.mmio.events.push(InterruptLine(False))
    rig.d.drain()
    assert rig.dm.named("inject_msi") == [(DOMID, 0xFEE0_3000, 0x700)]
    assert rig.dm.named("set_pci_intx_level") == [(DOMID, 0, 0, 4, 0, 1)]
    assert rig.dm.named("set_irq_level") == [(DOMID, GSI, 1), (DOMID, GSI, 0)]
    rig.dm.broken = True  # the guest is being destroyed: calls fail, nothing raises
    rig.fn.events.push(MsiMessage(0xFEE0_3000, 0x700))
    rig.d.drain()
    assert rig.d.stats.msis == 2


def test_a_device_that_raises_is_contained(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> int:
        raise RuntimeError("device model bug")

    monkeypatch.setattr(rig.mmio, "read", broken)
    assert rig.d.handle(ioreq(IOREQ_TYPE_COPY, MMIO, size=4)) == 0xFFFF_FFFF
    assert rig.d.stats.device_errors == 1
    assert rig.cfg_read(SBDF, P.PCI_VENDOR_ID, 2) == VP.VIRTIO_PCI_VENDOR_ID  # still serving
