"""The virtio-rng device model on a raw split ring the test writes as the driver:
fills, caps, the token bucket on a simulated clock, and hostile chains."""

from __future__ import annotations

import asyncio

import pytest
from rng_support import (
    WRITE,
    FailingSource,
    FakeTimer,
    RngRig,
    SeededSource,
    make_rig,
    raw_rig,
    settle,
)

from xenvirtio.devices.rng.config import RngConfig
from xenvirtio.devices.rng.device import SOURCE_RETRY, VirtioRngDevice
from xenvirtio.devices.rng.ratelimit import RateLimit
from xenvirtio.devices.rng.request import DeviceReadableBufferError
from xenvirtio.drivers.rng.driver import RngBrokenError
from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import VirtioDeviceId
from xenvirtio.virtio.queue import DescriptorAddressError, VirtqueueError


def test_identity_and_offer() -> None:
    dev = VirtioRngDevice()
    assert dev.device_id == VirtioDeviceId.ENTROPY == 4
    assert list(dev.queue_max_sizes) == [256]
    assert dev.config.size == 0
    assert dev.avail_features >> S.VIRTIO_F_VERSION_1 & 1
    assert dev.avail_features & 0xFFFFFF == 0  # 5.4.3: no device feature bits
    with pytest.raises(ValueError):
        VirtioRngDevice(config=RngConfig(rate_limit=RateLimit(10, 10)))  # needs a timer


def test_fills_each_chain_whole_across_segments() -> None:
    source = SeededSource(seed=2)
    rig = raw_rig(source)
    a, b = rig.ring.alloc(100), rig.ring.alloc(50)
    head = rig.post([(a, 100, WRITE), (b, 50, WRITE)])
    assert rig.used() == [(head, 150)]
    assert rig.mem.read(a, 100) + rig.mem.read(b, 50) == bytes(source.produced)
    assert rig.irq.queues == [0]


def test_max_fill_caps_a_huge_chain() -> None:
    rig = raw_rig(config=RngConfig(queue_size=16, max_fill=300))
    buf = rig.ring.alloc(4096)
    # Four descriptors over the same page: 16 KiB of writable space claimed.
    head = rig.post([(buf, 4096, WRITE)] * 4)
    assert rig.used() == [(head, 300)]


def test_empty_chain_is_returned_unused_and_the_device_goes_on() -> None:
    rig = raw_rig()
    buf = rig.ring.alloc(64)
    first = rig.post([(buf, 0, WRITE)])
    second = rig.post([(buf, 64, WRITE)])
    assert rig.used() == [(first, 0), (second, 64)]
    assert rig.device.dropped == 1 and not rig.device.broken


def test_device_readable_buffer_needs_reset() -> None:
    rig = raw_rig()
    buf = rig.ring.alloc(64)
    rig.ring.add_chain([(buf, 16, 0), (buf + 16, 48, WRITE)])
    with pytest.raises(DeviceReadableBufferError):
        rig.device.queue_notify(0)  # the transport turns this into DEVICE_NEEDS_RESET
    assert rig.device.broken
    rig.ring.add_chain([(buf, 64, WRITE)])
    rig.device.queue_notify(0)  # ignored until reset
    assert rig.ring.used_idx() == 0


def test_buffer_outside_guest_memory_is_a_ring_fault() -> None:
    rig = raw_rig()
    rig.ring.add_chain([(1 << 40, 64, WRITE)])
    with pytest.raises(DescriptorAddressError):
        rig.device.queue_notify(0)
    assert rig.device.broken


def test_rate_limit_waits_then_resumes_on_the_timer() -> None:
    timer = FakeTimer()  # times below are exact binary fractions
    config = RngConfig(queue_size=16, rate_limit=RateLimit(rate=128, burst=128), grant_quantum=16)
    rig = raw_rig(config=config, timer=timer)
    buf = rig.ring.alloc(1000)
    rig.post([(buf, 1000, WRITE)])
    assert rig.used()[-1][1] == 128  # the burst, then the bucket is dry
    rig.post([(buf, 1000, WRITE)])
    assert rig.ring.used_idx() == 1 and timer.deadline == timer.now() + 0.125
    timer.advance(0.0625)
    assert rig.ring.used_idx() == 1
    timer.advance(0.0625)
    assert rig.used()[-1][1] == 16  # one quantum, as soon as it was there
    rig.post([(buf, 1000, WRITE)])
    timer.advance(10)
    assert rig.used()[-1][1] == 16  # woke at the quantum: did not wait for more
    assert rig.device.delivered == 160


def test_reset_does_not_refill_the_bucket() -> None:
    timer = FakeTimer()
    config = RngConfig(queue_size=16, rate_limit=RateLimit(rate=16, burst=50), grant_quantum=8)
    rig = raw_rig(config=config, timer=timer)
    buf = rig.ring.alloc(64)
    rig.post([(buf, 64, WRITE)])
    assert rig.used() == [(0, 50)]
    rig.device.reset()
    assert timer.deadline is None
    fresh = raw_rig(device=rig.device)  # the driver sets the device up again
    fresh.post([(fresh.ring.alloc(64), 64, WRITE)])
    assert fresh.ring.used_idx() == 0  # still dry: a reset adds no tokens
    timer.advance(0.5)
    assert fresh.used() == [(0, 8)]  # the first quantum, half a second later


def test_failing_source_is_retried_on_the_timer() -> None:
    timer = FakeTimer()
    rig = raw_rig(source=FailingSource(2), timer=timer)
    buf = rig.ring.alloc(32)
    rig.post([(buf, 32, WRITE)])
    assert rig.ring.used_idx() == 0 and timer.deadline == pytest.approx(timer.now() + SOURCE_RETRY)
    timer.advance(SOURCE_RETRY)
    assert rig.ring.used_idx() == 0  # failed again, re-armed
    timer.advance(SOURCE_RETRY)
    assert rig.used() == [(0, 32)] and rig.mem.read(buf, 32) == b"\xaa" * 32


def _post_device_readable(rig: RngRig) -> None:
    """Play a hostile driver: a device-readable buffer on the request queue."""
    queue = rig.driver._queue
    assert queue is not None
    buf = rig.dma.alloc(16)
    queue.add(rig.mem, [(buf.addr, 16)], [], buf)


@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_hostile_driver_gets_needs_reset_through_the_transport(transport: str) -> None:
    async def scenario() -> None:
        rig = make_rig(transport, "split")
        assert len(await rig.driver.read(16)) == 16
        _post_device_readable(rig)
        reader = asyncio.create_task(rig.driver.read(8))  # its kick carries the bad buffer
        await settle()
        with pytest.raises(RngBrokenError):
            await reader
        assert rig.slot.transport.get_status() & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
        assert rig.device.broken
        rig.driver.close()  # resets the device
        assert not rig.device.broken and not rig.device.active
        assert rig.dma.in_use == 0
        # A fresh driver on the same device works again.
        assert len(await rig.new_driver().read(100)) == 100

    asyncio.run(scenario())


def test_a_broken_device_does_not_affect_another() -> None:
    async def scenario() -> None:
        bad, good = make_rig("mmio", "split"), make_rig("pci", "packed")
        _post_device_readable(bad)
        with pytest.raises(VirtqueueError):
            bad.device.queue_notify(0)
        assert len(await good.driver.read(1000)) == 1000

    asyncio.run(scenario())
