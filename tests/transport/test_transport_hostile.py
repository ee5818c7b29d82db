"""A hostile guest against the device side: random offsets, sizes and values on PCI
configuration space, on the BAR and on the MMIO window, and random bytes in the rings.
Nothing raises, another device instance sees no change, and the attacked device comes
back after a reset as good as new."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from transport_rigs import (
    BUF_BASE,
    KINDS,
    MMIO_WINDOW,
    RING_BASE,
    PciRig,
    Rig,
    make_pci_rig,
    make_rig,
)

from xenvirtio.spec import pci as P
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_pci as VP
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.testing.echo_device import ECHO_CFG_XOR_KEY
from xenvirtio.testing.inproc_bus import MMIO_BASE
from xenvirtio.transport.api import VirtioTransport
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.pci.bios import MmioWindow, assign_bars
from xenvirtio.transport.pci.device import BAR_SIZE
from xenvirtio.transport.pci.driver import VirtioPciDriver
from xenvirtio.transport.probe import attach_queue, kick, probe
from xenvirtio.virtio.queue import DriverQueue

V1 = 1 << S.VIRTIO_F_VERSION_1
WANTED = V1 | 1 << S.VIRTIO_F_RING_RESET | 1 << S.VIRTIO_RING_F_EVENT_IDX
SIZES = st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 7, 8, 9, 16])
VALUES = st.one_of(
    st.integers(-(2**64), 2**65),
    st.sampled_from([0, 1, 2, 3, 0xF, 0xFF, 0xFFFF, 0xFFFFFFFF, 2**64 - 1]),
)
CFG_HOT = list(range(0, 0x40, 2)) + list(range(0x40, 0xA8, 1)) + [0xFE, 0xFF, 0x100, 0xFFC]
CFG_OFFSETS = st.one_of(st.integers(-8, P.PCI_CFG_SPACE_EXP_SIZE + 8), st.sampled_from(CFG_HOT))
BAR_HOT = (
    list(range(0, VP.VIRTIO_PCI_COMMON_CFG_SIZEOF + 4, 2))
    + [0x1000, 0x1001, 0x2000, 0x2004, 0x2008, 0x3000, 0x3004, 0x3002]
    + [0x4000 + i for i in range(0, 0x20, 4)]
    + [0x6000, 0x6004, 0x7FFC, BAR_SIZE]
)
BAR_OFFSETS = st.one_of(st.integers(-8, BAR_SIZE + 8), st.sampled_from(BAR_HOT))
PCI_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("cfg"), st.just(0), CFG_OFFSETS, SIZES, VALUES, st.booleans()),
        st.tuples(st.just("bar"), st.integers(-1, 6), BAR_OFFSETS, SIZES, VALUES, st.booleans()),
    ),
    max_size=60,
)
MMIO_HOT = [*range(0, 0x104, 4), 0x101, 0x108, 0x10F, 0x1FC, 0x200]
MMIO_OPS = st.lists(
    st.tuples(
        st.one_of(st.integers(-8, 0x210), st.sampled_from(MMIO_HOT)),
        SIZES,
        VALUES,
        st.booleans(),
    ),
    max_size=60,
)


def _up(drv: VirtioTransport, mem: Any) -> DriverQueue[Any]:
    queues: list[DriverQueue[Any]] = []
    probe(drv, WANTED, lambda f: queues.append(attach_queue(drv, mem, 0, f, RING_BASE, 16)))
    drv.write_config(ECHO_CFG_XOR_KEY, b"\0")  # a driver sets the config it relies on
    return queues[0]


def _echo_ok(drv: VirtioTransport, q: DriverQueue[Any], mem: Any, payload: bytes) -> None:
    mem.write(BUF_BASE, payload)
    mem.write(BUF_BASE + 0x100, bytes(64))
    q.add(mem, [(BUF_BASE, len(payload))], [(BUF_BASE + 0x100, 64)], "t")
    kick(drv, q, mem)
    drv.ack_interrupt()
    assert q.get_used(mem) == ("t", len(payload))
    assert mem.read(BUF_BASE + 0x100, len(payload)) == payload


def _pci_snapshot(rig: PciRig) -> tuple[Any, ...]:
    """Everything observable without side effects (ISR excluded: reading clears it)."""
    cfg = tuple(rig.fn.config_read(off, 4) for off in range(0, P.PCI_CFG_SPACE_SIZE - 16, 4))
    common = tuple(rig.fn.bar_read(0, off, 1) for off in range(VP.VIRTIO_PCI_COMMON_CFG_SIZEOF))
    table = tuple(rig.fn.bar_read(0, 0x4000 + off, 4) for off in range(0, 32, 4))
    return cfg, common, table, rig.echo.echoed, rig.echo.resets


@given(ops=PCI_OPS)
def test_pci_function_survives_random_accesses(ops: list[Any]) -> None:
    victim, bystander = make_pci_rig(slot=3), make_pci_rig(slot=4)
    _up(victim.drv, victim.mem)
    qb = _up(bystander.drv, bystander.mem)
    before = _pci_snapshot(bystander)
    for kind, bar, off, size, value, write in ops:
        if kind == "cfg":
            if write:
                victim.fn.config_write(off, size, value)
            else:
                assert 0 <= victim.fn.config_read(off, size) < 1 << 64
        elif write:
            victim.fn.bar_write(bar, off, size, value)
        else:
            assert 0 <= victim.fn.bar_read(bar, off, size) < 1 << 64
        victim.bus.drain()
    assert _pci_snapshot(bystander) == before
    _echo_ok(bystander.drv, qb, bystander.mem, b"unharmed")
    # The victim's firmware and driver start over; the function is as good as new.
    assign_bars(victim.bus, victim.bdf, MmioWindow(*MMIO_WINDOW))
    drv = VirtioPciDriver(victim.bus, victim.bdf, msi=lambda v: (0xFEE0_0000, 0x60 + v))
    victim.bus.on_msi = drv.handle_msi
    _echo_ok(drv, _up(drv, victim.mem), victim.mem, b"recovered")


def _mmio_snapshot(rig: Rig) -> tuple[Any, ...]:
    dev = rig.transport
    assert isinstance(dev, VirtioMmioDevice)
    regs = tuple(dev.read(off, 4) for off in range(0, 0x110, 4))
    return regs, rig.echo.echoed, rig.echo.resets


@given(ops=MMIO_OPS)
def test_mmio_device_survives_random_accesses(ops: list[Any]) -> None:
    victim, bystander = make_rig("mmio"), make_rig("mmio")
    _up(victim.drv, victim.mem)
    qb = _up(bystander.drv, bystander.mem)
    before = _mmio_snapshot(bystander)
    dev = victim.transport
    assert isinstance(dev, VirtioMmioDevice)
    for off, size, value, write in ops:
        if write:
            dev.write(off, size, value)
        else:
            assert 0 <= dev.read(off, size) < 1 << 64
        victim.bus.drain()
    assert _mmio_snapshot(bystander) == before
    _echo_ok(bystander.drv, qb, bystander.mem, b"unharmed")
    _echo_ok(victim.drv, _up(victim.drv, victim.mem), victim.mem, b"recovered")
    assert MMIO_BASE in victim.bus.devices


@given(
    kind=st.sampled_from(KINDS),
    packed=st.booleans(),
    scribbles=st.lists(st.tuples(st.integers(0, 0x2000), st.binary(min_size=1, max_size=16))),
)
def test_scribbled_rings_never_crash(
    kind: str, packed: bool, scribbles: list[tuple[int, bytes]]
) -> None:
    rig = make_rig(kind)
    wanted = WANTED | (1 << S.VIRTIO_F_RING_PACKED if packed else 0)
    queues: list[DriverQueue[Any]] = []
    probe(
        rig.drv,
        wanted,
        lambda f: queues.append(attach_queue(rig.drv, rig.mem, 0, f, RING_BASE, 16)),
    )
    q = queues[0]
    for i in range(3):
        q.add(rig.mem, [(BUF_BASE + 64 * i, 8)], [(BUF_BASE + 0x1000 + 64 * i, 64)], i)
    for off, data in scribbles:
        rig.mem.write(RING_BASE + off, data)
    rig.drv.notify(0, None)
    status = rig.drv.get_status()
    assert status & DeviceStatus.DRIVER_OK
    if status & DeviceStatus.DEVICE_NEEDS_RESET:
        assert rig.drv.ack_interrupt() & 2  # told through a configuration interrupt
    rig.mem.write(RING_BASE, bytes(0x2100))
    _echo_ok(rig.drv, _up(rig.drv, rig.mem), rig.mem, b"again")
    assert struct.unpack("<I", rig.drv.read_config(0, 4)) == (4096,)
