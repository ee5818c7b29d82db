"""The virtio-console device model on raw split rings the test writes as the driver:
delivery, flow control, the configuration space, and hostile chains."""

from __future__ import annotations

import asyncio
import struct

import pytest
from console_support import WRITE, FakeBackend, make_rig, raw_rig, settle

from xenvirtio.devices.console.config import ConsoleConfig
from xenvirtio.devices.console.device import TX_CHUNK, VirtioConsoleDevice
from xenvirtio.devices.console.request import MisplacedBufferError
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_console as C
from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.virtio.queue import DescriptorAddressError, VirtqueueError


def test_identity_offer_and_configuration_layout() -> None:
    dev = VirtioConsoleDevice(ConsoleConfig(cols=132, rows=43))
    assert dev.device_id == VirtioDeviceId.CONSOLE == 3
    assert list(dev.queue_max_sizes) == [256, 256]  # receiveq0, transmitq0
    offered = dev.avail_features
    assert offered >> C.VIRTIO_CONSOLE_F_SIZE & 1
    assert offered >> C.VIRTIO_CONSOLE_F_EMERG_WRITE & 1
    assert not offered >> C.VIRTIO_CONSOLE_F_MULTIPORT & 1
    raw = dev.config.read(0, C.VIRTIO_CONSOLE_CONFIG_SIZE)
    assert C.VirtioConsoleConfig.unpack(raw) == (132, 43, 1, 0)
    plain = VirtioConsoleDevice(ConsoleConfig(size=False, emergency_write=False))
    assert plain.avail_features & 0xFFFFFF == 0


def test_emerg_wr_is_write_only_and_other_fields_read_only() -> None:
    rig = raw_rig()
    cfg = rig.device.config
    before = cfg.snapshot()
    assert cfg.driver_write(C.VIRTIO_CONSOLE_CFG_EMERG_WR, struct.pack("<I", 0x141))
    assert cfg.driver_write(C.VIRTIO_CONSOLE_CFG_EMERG_WR, b"B")  # a 1-byte access
    assert cfg.driver_write(4, struct.pack("<II", 7, ord("C")))  # 8 bytes over two fields
    assert not cfg.driver_write(C.VIRTIO_CONSOLE_CFG_EMERG_WR + 1, b"X")  # not the low byte
    assert not cfg.driver_write(C.VIRTIO_CONSOLE_CFG_COLS, struct.pack("<HH", 1, 1))
    assert bytes(rig.backend.sent) == b"ABC"
    assert cfg.snapshot() == before  # emerg_wr reads 0; nothing else moved
    assert cfg.generation == 0


def test_emergency_bytes_before_a_backend_are_kept() -> None:
    rig = raw_rig(connect=False)
    rig.device.config.driver_write(C.VIRTIO_CONSOLE_CFG_EMERG_WR, b"!")
    rig.device.connect(rig.backend)
    assert bytes(rig.backend.sent) == b"!"


def test_input_fills_receive_buffers_in_order_across_segments() -> None:
    rig = raw_rig()
    a, b = rig.rx.alloc(4), rig.rx.alloc(4)
    first = rig.rx.add_chain([(a, 4, WRITE)])
    second = rig.rx.add_chain([(b, 2, WRITE), (b + 2, 2, WRITE)])
    assert rig.device.receive(b"abcdef") == 6
    assert rig.used(rig.rx) == [(first, 4), (second, 2)]
    assert rig.mem.read(a, 4) == b"abcd" and rig.mem.read(b, 2) == b"ef"
    assert rig.irq.queues == [C.RECEIVEQ_PORT0]


def test_input_waits_for_buffers_within_its_bound_and_is_never_lost() -> None:
    rig = raw_rig(ConsoleConfig(queue_size=16, input_limit=10))
    assert rig.device.receive(b"0123456") == 7
    assert rig.device.receive(b"789abcdef") == 3  # the bound: the caller keeps the rest
    assert rig.device.input_space == 0
    rig.device.queue_notify(C.RECEIVEQ_PORT0)  # a kick without buffers changes nothing
    buf = rig.rx.alloc(6)
    rig.rx.add_chain([(buf, 6, WRITE)])
    rig.device.queue_notify(C.RECEIVEQ_PORT0)
    assert rig.mem.read(buf, 6) == b"012345"
    assert rig.device.input_space == 6 and rig.backend.space_calls == 1
    rig.device.reset()  # host input survives a device reset
    assert rig.device.input_pending == 4


def test_output_is_taken_only_while_the_backend_accepts() -> None:
    rig = raw_rig()
    big = rig.tx.alloc(3 * TX_CHUNK)
    payload = bytes(i % 256 for i in range(3 * TX_CHUNK))
    rig.mem.write(big, payload)
    rig.backend.block_after = TX_CHUNK  # full after the first chunk
    head = rig.tx.add_chain([(big, TX_CHUNK, 0), (big + TX_CHUNK, 2 * TX_CHUNK, 0)])
    rig.device.queue_notify(C.TRANSMITQ_PORT0)
    assert bytes(rig.backend.sent) == payload[:TX_CHUNK]
    assert rig.tx.used_idx() == 0  # held, partly sent
    rig.backend.blocked, rig.backend.block_after = False, None
    rig.device.resume_transmit()
    assert bytes(rig.backend.sent) == payload
    assert rig.used(rig.tx) == [(head, 0)]  # 5.3: the device writes nothing into it


def test_resize_sends_a_config_interrupt_only_when_size_was_negotiated() -> None:
    rig = raw_rig()
    assert rig.device.resize(100, 30) and rig.irq.configs == 1
    assert not rig.device.resize(100, 30) and rig.irq.configs == 1  # no change
    assert rig.device.config.generation == 1
    features = rig.device.avail_features & ~(1 << C.VIRTIO_CONSOLE_F_SIZE)
    quiet = raw_rig(features=features & ~(1 << S.VIRTIO_F_RING_PACKED))
    assert quiet.device.resize(100, 30) and quiet.irq.configs == 0
    with pytest.raises(ValueError):
        rig.device.resize(70000, 1)


def test_closing_the_guest_stream_ends_it_and_input_then_waits_in_the_device() -> None:
    async def scenario() -> None:
        rig = make_rig("mmio", "split", rx_buffers=2, rx_buffer_size=8)
        backend = FakeBackend()
        rig.device.connect(backend)
        rig.driver.writer.write(b"last words")
        rig.driver.writer.close()
        await rig.driver.writer.wait_closed()
        assert bytes(backend.sent) == b"last words"  # transmitted before the stream ended
        assert await rig.driver.reader.read() == b""  # EOF for the guest's reader too
        assert rig.device.receive(b"0123456789abcdefXYZ") == 19
        await settle()
        assert rig.device.input_pending == 3  # two buffers filled, none re-posted
        rig.driver.close()

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- hostile


def test_device_readable_receive_buffer_needs_reset() -> None:
    rig = raw_rig()
    buf = rig.rx.alloc(16)
    rig.rx.add_chain([(buf, 8, 0), (buf + 8, 8, WRITE)])
    rig.device.queue_notify(C.RECEIVEQ_PORT0)  # no input: the buffer is not looked at
    rig.device.receive(b"x")  # input arrives outside a transport call: needs_reset
    assert rig.device.broken and len(rig.resets) == 1 and "device-readable" in rig.resets[0]
    assert rig.rx.used_idx() == 0


def test_device_writable_transmit_buffer_needs_reset() -> None:
    rig = raw_rig()
    buf = rig.tx.alloc(16)
    rig.tx.add_chain([(buf, 8, 0), (buf + 8, 8, WRITE)])
    with pytest.raises(MisplacedBufferError):
        rig.device.queue_notify(C.TRANSMITQ_PORT0)
    assert rig.device.broken and rig.backend.sent == b""
    rig.tx.add_chain([(buf, 8, 0)])
    rig.device.queue_notify(C.TRANSMITQ_PORT0)  # ignored until reset
    assert rig.tx.used_idx() == 0


def test_receive_buffer_without_space_is_returned_empty() -> None:
    rig = raw_rig()
    buf = rig.rx.alloc(8)
    empty = rig.rx.add_chain([(buf, 0, WRITE)])
    good = rig.rx.add_chain([(buf, 8, WRITE)])
    rig.device.receive(b"hi")
    assert rig.used(rig.rx) == [(empty, 0), (good, 2)]
    assert rig.device.dropped_buffers == 1 and not rig.device.broken


@pytest.mark.parametrize("queue", [C.RECEIVEQ_PORT0, C.TRANSMITQ_PORT0])
def test_buffer_outside_guest_memory_is_a_ring_fault(queue: int) -> None:
    rig = raw_rig()
    ring = rig.rx if queue == C.RECEIVEQ_PORT0 else rig.tx
    ring.add_chain([(1 << 40, 64, WRITE if queue == C.RECEIVEQ_PORT0 else 0)])
    rig.device.receive(b"x")
    if queue == C.TRANSMITQ_PORT0:
        with pytest.raises(DescriptorAddressError):
            rig.device.queue_notify(queue)
    assert rig.device.broken


def test_unknown_queue_kicks_are_ignored() -> None:
    rig = raw_rig()
    for index in (2, 3, 99, -1):
        rig.device.queue_notify(index)
    assert not rig.device.broken


@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_hostile_driver_through_the_transport(transport: str) -> None:
    """A device-writable buffer on the transmitq: DEVICE_NEEDS_RESET, the guest's
    stream ends with ConnectionResetError, and a reset brings the device back."""

    async def scenario() -> None:
        rig = make_rig(transport, "split")
        rig.device.connect(FakeBackend())
        txq = rig.driver._txq
        assert txq is not None
        buf = rig.dma.alloc(16)
        txq.add(rig.mem, [], [(buf.addr, 16)], (buf, 0))
        rig.driver.writer.write(b"kick")  # its kick carries the bad buffer
        await settle()
        assert rig.slot.transport.get_status() & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
        assert rig.driver.broken is not None
        with pytest.raises(ConnectionResetError):
            await rig.driver.reader.read(1)
        with pytest.raises(ConnectionResetError):
            rig.driver.writer.write(b"more")
        rig.driver.close()
        assert not rig.device.broken and not rig.device.active

    asyncio.run(scenario())


def test_a_broken_console_does_not_affect_another() -> None:
    async def scenario() -> None:
        bad, good = make_rig("pci", "packed"), make_rig("mmio", "split")
        bad.device.connect(FakeBackend())
        txq = bad.driver._txq
        assert txq is not None
        buf = bad.dma.alloc(16)
        txq.add(bad.mem, [], [(buf.addr, 16)], (buf, 0))
        with pytest.raises(VirtqueueError):
            bad.device.queue_notify(C.TRANSMITQ_PORT0)
        got = asyncio.ensure_future(good.driver.reader.readexactly(5))
        good.device.receive(b"alive")
        assert await asyncio.wait_for(got, 5) == b"alive"

    asyncio.run(scenario())
