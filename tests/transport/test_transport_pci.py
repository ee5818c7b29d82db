"""virtio-pci specifics: the configuration header and BAR sizing as firmware sees them,
the capability list, MSI-X masking and pending bits, INT#x with ISR status, the
PCI_CFG access window and queue_notify_data."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from transport_rigs import BUF_BASE, MMIO_WINDOW, RING_BASE, make_pci_rig

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import pci as P
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_pci as VP
from xenvirtio.testing.echo_device import ECHO_CFG_SIZE, ECHO_DEVICE_ID, EchoDevice
from xenvirtio.testing.inproc_bus import InProcessBus
from xenvirtio.transport.api import InterruptFlags
from xenvirtio.transport.events import BarDecodeChanged, InterruptLine, MsiMessage, QueueNotified
from xenvirtio.transport.pci.bios import MmioWindow, assign_bars, scan, size_bars
from xenvirtio.transport.pci.device import BAR_SIZE, VirtioPciFunction
from xenvirtio.transport.pci.driver import VirtioPciDriver, find_capabilities
from xenvirtio.transport.probe import attach_queue, kick, probe
from xenvirtio.virtio.queue import DriverQueue

V1 = 1 << S.VIRTIO_F_VERSION_1
BDF = P.pci_bdf(0, 3, 0)


def bare_function(**kwargs: Any) -> tuple[VirtioPciFunction, InProcessBus]:
    fn = VirtioPciFunction(EchoDevice(), FlatMemory(1 << 20), **kwargs)
    bus = InProcessBus(record=True)
    bus.attach_pci(BDF, fn)
    return fn, bus


def test_header_identifies_a_modern_virtio_function() -> None:
    _, bus = bare_function()
    assert bus.cfg_read(BDF, P.PCI_VENDOR_ID, 2) == 0x1AF4
    assert bus.cfg_read(BDF, P.PCI_DEVICE_ID, 2) == 0x1040 + ECHO_DEVICE_ID
    assert bus.cfg_read(BDF, P.PCI_REVISION_ID, 1) >= 1  # 4.1.2.1: non-transitional
    assert bus.cfg_read(BDF, P.PCI_SUBSYSTEM_ID, 2) >= 0x40
    assert bus.cfg_read(BDF, P.PCI_STATUS, 2) & P.PCI_STATUS_CAP_LIST
    assert bus.cfg_read(BDF, P.PCI_HEADER_TYPE, 1) == 0
    assert bus.cfg_read(BDF, P.PCI_INTERRUPT_PIN, 1) == P.PCI_INTERRUPT_PIN_INTA
    bus.cfg_write(BDF, P.PCI_VENDOR_ID, 4, 0)  # read-only: unchanged
    assert bus.cfg_read(BDF, P.PCI_VENDOR_ID, 2) == 0x1AF4
    found = scan(bus)
    assert [(f.bdf, f.vendor_id, f.device_id) for f in found] == [(BDF, 0x1AF4, 0x107F)]
    assert found[0].class_code == P.PCI_CLASS_OTHERS
    assert bus.cfg_read(P.pci_bdf(0, 4, 0), P.PCI_VENDOR_ID, 2) == 0xFFFF


@pytest.mark.parametrize("bar64", [True, False])
def test_bar_sizing_like_a_bios(bar64: bool) -> None:
    fn, bus = bare_function(bar64=bar64)
    bus.cfg_write(BDF, P.PCI_BASE_ADDRESS_0, 4, 0xFFFFFFFF)
    kind = P.PCI_BASE_ADDRESS_MEM_TYPE_64 if bar64 else 0
    assert bus.cfg_read(BDF, P.PCI_BASE_ADDRESS_0, 4) == (~(BAR_SIZE - 1) & 0xFFFFFFF0) | kind
    bus.cfg_write(BDF, P.PCI_BASE_ADDRESS_0 + 4, 4, 0xFFFFFFFF)
    assert bus.cfg_read(BDF, P.PCI_BASE_ADDRESS_0 + 4, 4) == (0xFFFFFFFF if bar64 else 0)
    for reg in (0x18, 0x1C, 0x20, 0x24, P.PCI_ROM_ADDRESS):  # absent: all-ones reads 0
        bus.cfg_write(BDF, reg, 4, 0xFFFFFFFF)
        assert bus.cfg_read(BDF, reg, 4) == 0
    bars = size_bars(bus, BDF)
    assert [(b.index, b.size, b.mem64, b.io) for b in bars] == [(0, BAR_SIZE, bar64, False)]
    assert not bus.windows  # memory decoding still off: nothing decoded yet
    placed = assign_bars(bus, BDF, MmioWindow(0xE000_1000, 0x100000))
    base = placed[0].base
    assert base % BAR_SIZE == 0 and base >= 0xE000_1000
    assert bus.windows == {(BDF, 0): (base, BAR_SIZE)}
    assert fn.decode(base + 0x10, 4) == (0, 0x10)
    assert fn.decode(base + BAR_SIZE - 2, 4) is None  # runs past the BAR
    bus.cfg_write(BDF, P.PCI_COMMAND, 2, 0)  # decoding off: the window goes away
    assert BarDecodeChanged(0, None, BAR_SIZE) in bus.logged(BarDecodeChanged)
    assert bus.mmio_read(base, 4) == 0xFFFFFFFF


def test_capability_list() -> None:
    rig = make_pci_rig()
    caps, msix = find_capabilities(rig.bus, rig.bdf)
    assert sorted(caps) == [1, 2, 3, 4, 5]
    assert caps[VP.VIRTIO_PCI_CAP_COMMON_CFG].length == VP.VIRTIO_PCI_COMMON_CFG_SIZEOF
    assert caps[VP.VIRTIO_PCI_CAP_DEVICE_CFG].length == ECHO_CFG_SIZE
    mult = caps[VP.VIRTIO_PCI_CAP_NOTIFY_CFG].extra
    assert mult % 4 == 0 and mult & (mult - 1) == 0  # 4.1.4.4.1
    assert msix is not None
    ctrl = rig.bus.cfg_read(rig.bdf, msix + P.PCI_MSIX_FLAGS, 2)
    assert (ctrl & P.PCI_MSIX_FLAGS_QSIZE) + 1 == 2  # one queue + config
    assert ctrl & P.PCI_MSIX_FLAGS_ENABLE and rig.drv.msix_vectors == 2


def _up(rig: Any, wanted: int = V1) -> DriverQueue[Any]:
    queues: list[DriverQueue[Any]] = []
    probe(rig.drv, wanted, lambda f: queues.append(attach_queue(rig.drv, rig.mem, 0, f, RING_BASE)))
    return queues[0]


def _send(rig: Any, q: DriverQueue[Any], token: int) -> None:
    rig.mem.write(BUF_BASE, b"ping")
    q.add(rig.mem, [(BUF_BASE, 4)], [(BUF_BASE + 64, 64)], token)
    kick(rig.drv, q, rig.mem)


def test_msix_vector_mask_sets_pending_then_delivers() -> None:
    rig = make_pci_rig()
    q = _up(rig)
    entry = rig.drv.msix_table + 1 * P.PCI_MSIX_ENTRY_SIZE + P.PCI_MSIX_ENTRY_VECTOR_CTRL
    pba = rig.drv.msix_table + 0x2000  # the PBA follows the table region (device layout)
    rig.bus.mmio_write(entry, 4, P.PCI_MSIX_ENTRY_CTRL_MASKBIT)
    sent = len(rig.bus.msis)
    _send(rig, q, 1)
    assert len(rig.bus.msis) == sent and rig.bus.mmio_read(pba, 8) == 0b10
    assert q.get_used(rig.mem) == (1, 4)  # the work was done; only the message waits
    rig.bus.mmio_write(entry, 4, 0)
    assert rig.bus.msis[sent:] == [MsiMessage(0xFEE0_0000, 0x41)]
    assert rig.bus.mmio_read(pba, 8) == 0
    assert rig.drv.ack_interrupt() == InterruptFlags.QUEUE


def test_msix_function_mask_and_bus_master_gate_delivery() -> None:
    rig = make_pci_rig()
    q = _up(rig)
    msix = find_capabilities(rig.bus, rig.bdf)[1]
    assert msix is not None
    flags = msix + P.PCI_MSIX_FLAGS
    ctrl = rig.bus.cfg_read(rig.bdf, flags, 2)
    rig.bus.cfg_write(rig.bdf, flags, 2, ctrl | P.PCI_MSIX_FLAGS_MASKALL)
    sent = len(rig.bus.msis)
    _send(rig, q, 1)
    assert len(rig.bus.msis) == sent
    command = rig.bus.cfg_read(rig.bdf, P.PCI_COMMAND, 2)
    rig.bus.cfg_write(rig.bdf, P.PCI_COMMAND, 2, command & ~P.PCI_COMMAND_MASTER)
    rig.bus.cfg_write(rig.bdf, flags, 2, ctrl)  # unmasked, but no bus mastering yet
    assert len(rig.bus.msis) == sent
    rig.bus.cfg_write(rig.bdf, P.PCI_COMMAND, 2, command)
    assert len(rig.bus.msis) == sent + 1
    assert not rig.bus.logged(InterruptLine)  # INT#x never used while MSI-X is on


def test_queue_vector_outside_table_reads_no_vector() -> None:
    rig = make_pci_rig()
    rig.drv.reset()
    common = rig.drv.common
    rig.bus.mmio_write(common + VP.VIRTIO_PCI_COMMON_Q_SELECT, 2, 0)
    rig.bus.mmio_write(common + VP.VIRTIO_PCI_COMMON_Q_MSIX, 2, 2)  # table has 0, 1
    assert rig.bus.mmio_read(common + VP.VIRTIO_PCI_COMMON_Q_MSIX, 2) == VP.VIRTIO_MSI_NO_VECTOR
    rig.bus.mmio_write(common + VP.VIRTIO_PCI_COMMON_Q_MSIX, 2, 1)
    assert rig.bus.mmio_read(common + VP.VIRTIO_PCI_COMMON_Q_MSIX, 2) == 1
    rig.bus.mmio_write(common + VP.VIRTIO_PCI_COMMON_Q_SELECT, 2, 7)  # no such queue
    assert rig.bus.mmio_read(common + VP.VIRTIO_PCI_COMMON_Q_SIZE, 2) == 0


def test_no_vector_means_no_interrupt() -> None:
    rig = make_pci_rig()
    q = _up(rig)
    common = rig.drv.common
    rig.bus.mmio_write(common + VP.VIRTIO_PCI_COMMON_MSIX, 2, VP.VIRTIO_MSI_NO_VECTOR)
    sent = len(rig.bus.msis)
    rig.echo.set_label(5)
    assert len(rig.bus.msis) == sent  # 4.1.5.5.1: MUST NOT deliver
    _send(rig, q, 1)
    assert len(rig.bus.msis) == sent + 1  # the queue still has its vector


def test_intx_follows_isr() -> None:
    rig = make_pci_rig(msix=False)
    q = _up(rig)
    _send(rig, q, 1)
    assert rig.bus.lines[rig.bdf]
    assert rig.bus.cfg_read(rig.bdf, P.PCI_STATUS, 2) & P.PCI_STATUS_INTERRUPT
    assert rig.drv.ack_interrupt() == InterruptFlags.QUEUE  # the read clears ISR
    assert not rig.bus.lines[rig.bdf]
    assert not rig.bus.cfg_read(rig.bdf, P.PCI_STATUS, 2) & P.PCI_STATUS_INTERRUPT
    command = rig.bus.cfg_read(rig.bdf, P.PCI_COMMAND, 2)
    rig.bus.cfg_write(rig.bdf, P.PCI_COMMAND, 2, command | P.PCI_COMMAND_INTX_DISABLE)
    rig.echo.set_label(9)
    assert not rig.bus.lines[rig.bdf]  # masked by Interrupt Disable ...
    assert rig.bus.cfg_read(rig.bdf, P.PCI_STATUS, 2) & P.PCI_STATUS_INTERRUPT  # ... pending
    rig.bus.cfg_write(rig.bdf, P.PCI_COMMAND, 2, command)
    assert rig.bus.lines[rig.bdf]
    assert rig.drv.ack_interrupt() == InterruptFlags.CONFIG


def test_pci_cfg_window_reaches_the_bar() -> None:
    rig = make_pci_rig()
    cap = find_capabilities(rig.bus, rig.bdf)[0][VP.VIRTIO_PCI_CAP_PCI_CFG].position
    bus, bdf = rig.bus, rig.bdf

    def window(offset: int, length: int) -> None:
        bus.cfg_write(bdf, cap + VP.VIRTIO_PCI_CAP_BAR, 1, 0)
        bus.cfg_write(bdf, cap + VP.VIRTIO_PCI_CAP_OFFSET, 4, offset)
        bus.cfg_write(bdf, cap + VP.VIRTIO_PCI_CAP_LENGTH, 4, length)

    window(VP.VIRTIO_PCI_COMMON_NUMQ, 2)
    assert bus.cfg_read(bdf, cap + VP.VIRTIO_PCI_CFG_CAP_DATA, 4) & 0xFFFF == 1
    window(VP.VIRTIO_PCI_COMMON_STATUS, 1)
    bus.cfg_write(bdf, cap + VP.VIRTIO_PCI_CFG_CAP_DATA, 1, 1)  # ACKNOWLEDGE
    assert rig.drv.get_status() == 1
    window(VP.VIRTIO_PCI_COMMON_STATUS + 1, 2)  # misaligned: 4.1.4.9.2, no access
    assert bus.cfg_read(bdf, cap + VP.VIRTIO_PCI_CFG_CAP_DATA, 4) == 1  # last data kept


def test_queue_notify_data_replaces_the_index() -> None:
    mem = FlatMemory(4 << 20)
    fn = VirtioPciFunction(EchoDevice(queues=2), mem, notify_data=[0x700, 0x701])
    bus = InProcessBus(record=True)
    bus.attach_pci(BDF, fn)
    assign_bars(bus, BDF, MmioWindow(*MMIO_WINDOW))
    drv = VirtioPciDriver(bus, BDF)
    wanted = V1 | 1 << S.VIRTIO_F_NOTIF_CONFIG_DATA
    queues: list[DriverQueue[Any]] = []

    def setup(f: int) -> None:
        queues.extend(attach_queue(drv, mem, i, f, RING_BASE + i * 0x8000, 16) for i in (0, 1))

    probe(drv, wanted, setup)
    mem.write(BUF_BASE, b"hi")
    queues[1].add(mem, [(BUF_BASE, 2)], [(BUF_BASE + 64, 64)], 0)
    kick(drv, queues[1], mem)
    assert bus.logged(QueueNotified) == [QueueNotified(1, 0x701)]
    assert queues[1].get_used(mem) == (0, 2)


def test_functions_do_not_share_state() -> None:
    a, b = make_pci_rig(slot=3), make_pci_rig(slot=4)
    qa = _up(a)
    b.drv.reset()
    _send(a, qa, 1)
    assert b.drv.get_status() == 0 and b.echo.ctx is None and not b.bus.msis
    assert struct.unpack("<I", a.drv.read_config(0, 4)) == (4096,)
