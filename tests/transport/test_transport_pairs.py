"""Guest driver against device over each transport (virtio-pci with MSI-X, virtio-pci
with INT#x, virtio-mmio), split and packed rings, with the echo device: the full probe
sequence, feature negotiation, buffers with notifications and interrupts, configuration
changes, device reset, RING_RESET and DEVICE_NEEDS_RESET."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from transport_rigs import BUF_BASE, KINDS, RING_BASE, Rig, make_rig

from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.testing.echo_device import (
    ECHO_CFG_LABEL,
    ECHO_CFG_MAX_LEN,
    ECHO_CFG_XOR_KEY,
    ECHO_DEVICE_ID,
    ECHO_FEATURES,
    EchoDevice,
)
from xenvirtio.transport.api import InterruptFlags
from xenvirtio.transport.events import (
    DeviceActivated,
    DeviceReset,
    NeedsReset,
    QueueNotified,
)
from xenvirtio.transport.probe import (
    FeaturesRefusedError,
    attach_queue,
    kick,
    probe,
    read_config_consistent,
)
from xenvirtio.virtio.queue import DriverQueue

V1 = 1 << S.VIRTIO_F_VERSION_1
PACKED = 1 << S.VIRTIO_F_RING_PACKED
EVENT_IDX = 1 << S.VIRTIO_RING_F_EVENT_IDX
RING_RESET = 1 << S.VIRTIO_F_RING_RESET
NOTIF_DATA = 1 << S.VIRTIO_F_NOTIFICATION_DATA
NOTIF_CONFIG = 1 << S.VIRTIO_F_NOTIF_CONFIG_DATA
FORMATS = {"split": V1 | RING_RESET, "packed": V1 | RING_RESET | PACKED}
SLOT = 256


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(FORMATS))
def ring(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def bring_up(rig: Rig, wanted: int, size: int = 64) -> tuple[int, DriverQueue[Any]]:
    queues: list[DriverQueue[Any]] = []

    def setup(features: int) -> None:
        queues.append(attach_queue(rig.drv, rig.mem, 0, features, RING_BASE, size))

    features = probe(rig.drv, wanted, setup)
    return features, queues[0]


def send(rig: Rig, q: DriverQueue[Any], payloads: list[bytes]) -> None:
    """Expose one buffer per payload (readable payload, writable space) and kick."""
    for i, data in enumerate(payloads):
        src, dst = BUF_BASE + 2 * i * SLOT, BUF_BASE + (2 * i + 1) * SLOT
        rig.mem.write(src, data)
        rig.mem.write(dst, bytes(SLOT))
        q.add(rig.mem, [(src, len(data))], [(dst, SLOT)], i)
    kick(rig.drv, q, rig.mem)


def collect(rig: Rig, q: DriverQueue[Any], payloads: list[bytes]) -> list[bytes]:
    got = sorted(q.get_used_batch(rig.mem, len(payloads) + 1))
    assert [tok for tok, _ in got] == list(range(len(payloads)))
    out = []
    for token, written in got:
        assert written == len(payloads[token])
        out.append(rig.mem.read(BUF_BASE + (2 * token + 1) * SLOT, written))
    return out


def test_probe_negotiates_and_echoes(kind: str, ring: str) -> None:
    rig = make_rig(kind)
    features, q = bring_up(rig, FORMATS[ring] | EVENT_IDX)
    assert features == FORMATS[ring] | EVENT_IDX
    assert rig.drv.device_id == ECHO_DEVICE_ID
    assert rig.drv.get_status() == (
        DeviceStatus.ACKNOWLEDGE
        | DeviceStatus.DRIVER
        | DeviceStatus.FEATURES_OK
        | DeviceStatus.DRIVER_OK
    )
    assert rig.bus.logged(DeviceActivated) == [DeviceActivated(features)]
    assert rig.echo.ctx is not None and rig.echo.ctx.features == features
    for round_ in range(3):
        payloads = [bytes([round_, i]) * (i + 1) for i in range(5)]
        send(rig, q, payloads)
        assert rig.interrupted()
        assert rig.drv.ack_interrupt() & InterruptFlags.QUEUE
        assert collect(rig, q, payloads) == payloads
        assert not rig.interrupted()  # acknowledged: nothing left pending
    assert rig.echo.echoed == 15
    assert all(ev.index == 0 for ev in rig.bus.logged(QueueNotified))


def test_used_buffer_notification_suppressed(kind: str, ring: str) -> None:
    rig = make_rig(kind)
    _, q = bring_up(rig, FORMATS[ring] | EVENT_IDX)
    q.disable_cb(rig.mem)
    send(rig, q, [b"quiet"])
    assert not rig.interrupted()  # the device saw the suppression and stayed silent
    assert collect(rig, q, [b"quiet"]) == [b"quiet"]
    assert not q.enable_cb(rig.mem)
    send(rig, q, [b"loud"])
    assert rig.interrupted()
    assert rig.drv.ack_interrupt() == InterruptFlags.QUEUE


def test_device_refusing_features_ok(kind: str) -> None:
    need = 1 << S.VIRTIO_F_ACCESS_PLATFORM
    rig = make_rig(kind, EchoDevice(features=ECHO_FEATURES | need, required=need))
    with pytest.raises(FeaturesRefusedError):
        bring_up(rig, V1)
    status = rig.drv.get_status()
    assert status & DeviceStatus.FAILED and not status & DeviceStatus.FEATURES_OK
    assert rig.echo.ctx is None
    features, q = bring_up(rig, V1 | need)  # a driver that accepts it gets through
    assert features == V1 | need
    send(rig, q, [b"granted"])
    assert collect(rig, q, [b"granted"]) == [b"granted"]


def test_config_change_interrupt_and_generation(kind: str) -> None:
    rig = make_rig(kind)
    _, q = bring_up(rig, V1)
    assert struct.unpack("<I", rig.drv.read_config(ECHO_CFG_MAX_LEN, 4)) == (4096,)
    before = rig.drv.config_generation
    assert rig.echo.set_label(0x1122_3344_5566_7788)
    assert rig.interrupted()
    assert rig.drv.ack_interrupt() & InterruptFlags.CONFIG
    assert rig.drv.config_generation != before
    label = read_config_consistent(rig.drv, ECHO_CFG_LABEL, 8)
    assert struct.unpack("<Q", label) == (0x1122_3344_5566_7788,)
    assert not rig.echo.set_label(0x1122_3344_5566_7788)  # unchanged: no notification
    assert not rig.interrupted()
    rig.drv.write_config(ECHO_CFG_XOR_KEY, b"\x5a")
    rig.drv.write_config(ECHO_CFG_MAX_LEN, b"\0\0\0\0")  # read-only field: ignored
    assert rig.drv.read_config(ECHO_CFG_XOR_KEY, 1) == b"\x5a"
    send(rig, q, [b"\x00\xff"])
    rig.drv.ack_interrupt()
    assert collect(rig, q, [b"\x00\xff"]) == [b"\x5a\xa5"]


def test_reset_then_probe_again(kind: str, ring: str) -> None:
    rig = make_rig(kind)
    _, q = bring_up(rig, FORMATS[ring])
    send(rig, q, [b"one"])
    rig.drv.reset()
    assert rig.drv.get_status() == 0 and rig.echo.ctx is None
    assert rig.bus.logged(DeviceReset)
    assert not rig.drv.ack_interrupt()  # a reset clears interrupt status
    _, q = bring_up(rig, FORMATS[ring])
    send(rig, q, [b"two"])
    assert rig.drv.ack_interrupt() & InterruptFlags.QUEUE
    assert collect(rig, q, [b"two"]) == [b"two"]


def test_ring_reset_one_queue(kind: str, ring: str) -> None:
    rig = make_rig(kind)
    features, q = bring_up(rig, FORMATS[ring])
    assert features & RING_RESET
    send(rig, q, [b"before"])
    rig.drv.ack_interrupt()
    assert collect(rig, q, [b"before"]) == [b"before"]
    q.add(rig.mem, [(BUF_BASE, 4)], [(BUF_BASE + SLOT, SLOT)], 99)  # left outstanding
    rig.drv.reset_queue(0)
    assert not rig.drv.queue_enabled(0)
    assert rig.echo.queue_resets == [0]
    assert q.detach_unused() == [99]
    status = rig.drv.get_status()
    assert status & DeviceStatus.DRIVER_OK and not status & DeviceStatus.DEVICE_NEEDS_RESET
    q = attach_queue(rig.drv, rig.mem, 0, features, RING_BASE + 0x8000, 32)  # elsewhere
    send(rig, q, [b"after"])
    assert rig.drv.ack_interrupt() & InterruptFlags.QUEUE
    assert collect(rig, q, [b"after"]) == [b"after"]


def test_scribbled_ring_sets_needs_reset(kind: str, ring: str) -> None:
    rig = make_rig(kind)
    _, q = bring_up(rig, FORMATS[ring])
    src = BUF_BASE
    q.add(rig.mem, [(src, 8)], [(src + SLOT, SLOT)], 0)
    desc0 = q.config.desc_addr  # both formats put the first buffer in descriptor 0
    rig.mem.write(desc0, struct.pack("<Q", 0xFFFF_FFFF_0000))  # addr now unmapped
    kick(rig.drv, q, rig.mem)
    status = rig.drv.get_status()
    assert status & DeviceStatus.DEVICE_NEEDS_RESET and status & DeviceStatus.DRIVER_OK
    assert rig.interrupted()
    assert rig.drv.ack_interrupt() & InterruptFlags.CONFIG  # 2.1.2: config notification
    assert len(rig.bus.logged(NeedsReset)) == 1
    assert rig.echo.echoed == 0
    _, q = bring_up(rig, FORMATS[ring])  # the driver recovers by resetting
    send(rig, q, [b"fixed"])
    assert collect(rig, q, [b"fixed"]) == [b"fixed"]


def test_notification_data(kind: str, ring: str) -> None:
    wanted = FORMATS[ring] | NOTIF_DATA | NOTIF_CONFIG
    rig = make_rig(kind)
    features, q = bring_up(rig, wanted)
    assert features & NOTIF_DATA
    # virtio-mmio cannot carry queue_notify_data, so it never offers NOTIF_CONFIG_DATA
    assert bool(features & NOTIF_CONFIG) == kind.startswith("pci")
    for n in (1, 3):
        send(rig, q, [b"x"] * n)
        rig.drv.ack_interrupt()
        collect(rig, q, [b"x"] * n)
    kicks = [ev for ev in rig.bus.logged(QueueNotified) if isinstance(ev, QueueNotified)]
    assert [ev.data & 0xFFFF for ev in kicks] == [0, 0]
    if ring == "split":  # 2.9: next_off is the avail idx after the new buffers
        assert [ev.data >> 16 for ev in kicks] == [1, 4]
    else:  # packed: the descriptor offset (2 per buffer), wrap counter 1 in bit 15
        assert [ev.data >> 16 for ev in kicks] == [0x8002, 0x8008]


def test_kick_before_driver_ok_is_ignored(kind: str) -> None:
    rig = make_rig(kind)
    rig.drv.reset()
    rig.drv.set_status(DeviceStatus.ACKNOWLEDGE)
    rig.drv.notify(0)
    assert not rig.bus.logged(QueueNotified)
    assert rig.echo.ctx is None
