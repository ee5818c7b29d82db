"""virtio-mmio specifics: discovery registers, access widths, InterruptStatus/ACK,
QueueReady = 0, shared memory regions."""

from __future__ import annotations

from typing import Any

import pytest
from transport_rigs import BUF_BASE, RING_BASE

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_mmio as M
from xenvirtio.testing.echo_device import ECHO_DEVICE_ID, EchoDevice
from xenvirtio.testing.inproc_bus import MMIO_BASE, InProcessBus
from xenvirtio.transport.api import InterruptFlags
from xenvirtio.transport.mmio.device import VirtioMmioDevice
from xenvirtio.transport.mmio.driver import MmioProbeError, VirtioMmioDriver, probe_mmio
from xenvirtio.transport.probe import attach_queue, kick, probe
from xenvirtio.virtio.queue import DriverQueue

V1 = 1 << S.VIRTIO_F_VERSION_1


class PlaceholderDevice(EchoDevice):
    @property
    def device_id(self) -> int:
        return 0


def rig(
    echo: EchoDevice | None = None, **kwargs: Any
) -> tuple[FlatMemory, EchoDevice, VirtioMmioDevice, InProcessBus]:
    mem = FlatMemory(4 << 20)
    echo = echo or EchoDevice()
    dev = VirtioMmioDevice(echo, mem, **kwargs)
    bus = InProcessBus(record=True)
    bus.attach_mmio(MMIO_BASE, dev)
    return mem, echo, dev, bus


def test_discovery_registers() -> None:
    _, _, dev, bus = rig()
    assert bus.read(MMIO_BASE + M.VIRTIO_MMIO_MAGIC_VALUE, 4) == 0x74726976
    assert bus.read(MMIO_BASE + M.VIRTIO_MMIO_VERSION, 4) == 2
    drv = probe_mmio(bus, MMIO_BASE)
    assert drv is not None and drv.device_id == ECHO_DEVICE_ID and drv.vendor_id == 0x1AF4
    assert drv.num_queues == 1 and drv.queue_max_size(0) == 256 and drv.queue_max_size(1) == 0
    with pytest.raises(MmioProbeError):
        VirtioMmioDriver(bus, MMIO_BASE + 0x10000)  # nothing there: magic reads ~0
    _, _, _, empty = rig(PlaceholderDevice())
    assert probe_mmio(empty, MMIO_BASE) is None  # 4.2.3.1.1: ignored, no error
    assert dev.region_size == 0x200


def test_control_registers_take_only_aligned_words() -> None:
    _, _, dev, _ = rig()
    assert dev.read(M.VIRTIO_MMIO_MAGIC_VALUE, 2) == 0
    assert dev.read(M.VIRTIO_MMIO_MAGIC_VALUE + 1, 4) == 0
    dev.write(M.VIRTIO_MMIO_STATUS, 1, 1)  # byte write to Status: ignored
    assert dev.read(M.VIRTIO_MMIO_STATUS, 4) == 0
    dev.write(M.VIRTIO_MMIO_STATUS, 4, 1)
    assert dev.read(M.VIRTIO_MMIO_STATUS, 4) == 1
    assert dev.read(M.VIRTIO_MMIO_QUEUE_NUM, 4) == 0  # write-only register
    assert dev.read(M.VIRTIO_MMIO_CONFIG + 1, 2) == 0x0010  # config: any width (max_len)


def _up(bus: InProcessBus, mem: FlatMemory) -> tuple[VirtioMmioDriver, DriverQueue[Any]]:
    drv = VirtioMmioDriver(bus, MMIO_BASE)
    queues: list[DriverQueue[Any]] = []
    probe(drv, V1, lambda f: queues.append(attach_queue(drv, mem, 0, f, RING_BASE)))
    return drv, queues[0]


def test_interrupt_status_and_partial_ack() -> None:
    mem, echo, dev, bus = rig()
    drv, q = _up(bus, mem)
    mem.write(BUF_BASE, b"abc")
    q.add(mem, [(BUF_BASE, 3)], [(BUF_BASE + 64, 64)], 7)
    kick(drv, q, mem)
    echo.set_label(1)
    assert dev.read(M.VIRTIO_MMIO_INTERRUPT_STATUS, 4) == 3 and dev.line
    dev.write(M.VIRTIO_MMIO_INTERRUPT_ACK, 4, M.VIRTIO_MMIO_INT_CONFIG)
    assert dev.read(M.VIRTIO_MMIO_INTERRUPT_STATUS, 4) == 1 and bus.lines[MMIO_BASE]
    assert drv.ack_interrupt() == InterruptFlags.QUEUE
    assert not bus.lines[MMIO_BASE]
    assert q.get_used(mem) == (7, 3)


def test_queue_ready_zero_stops_the_queue() -> None:
    mem, echo, _, bus = rig()
    drv, q = _up(bus, mem)
    drv.disable_queue(0)
    assert echo.queue_resets == [0] and echo.ctx is not None and echo.ctx.queues == [None]
    mem.write(BUF_BASE, b"abc")
    q.add(mem, [(BUF_BASE, 3)], [(BUF_BASE + 64, 64)], 1)
    kick(drv, q, mem)
    assert q.get_used(mem) is None and echo.echoed == 0  # 4.2.2.1: queue not accessed


def test_shared_memory_regions() -> None:
    _, _, _, bus = rig(shm_regions={2: (0x4_0000_0000, 0x20_0000)})
    drv = VirtioMmioDriver(bus, MMIO_BASE)
    assert drv.shm_region(0) is None
    assert drv.shm_region(2) == (0x4_0000_0000, 0x20_0000)
