"""virtio-rng end to end in one process: the guest driver against the device model over
virtio-mmio and virtio-pci (MSI-X), split and packed rings."""

from __future__ import annotations

import asyncio
import io
import time
from fractions import Fraction

import pytest
from rng_support import KINDS, FakeTimer, SeededSource, make_rig, settle

from xenvirtio.devices.rng.config import RngConfig
from xenvirtio.devices.rng.engine import LoopTimer
from xenvirtio.devices.rng.ratelimit import RateLimit
from xenvirtio.drivers.rng.hwrng import HwRngReader

pytestmark = pytest.mark.parametrize(("transport", "ring"), KINDS)


def test_bytes_delivered_from_host_csprng(transport: str, ring: str) -> None:
    async def scenario() -> None:
        rig = make_rig(transport, ring)
        sizes = [1, 7, 64, 4096, 4097, 20000]
        chunks = [await rig.driver.read(n) for n in sizes]
        assert [len(c) for c in chunks] == sizes
        big = chunks[-1]
        assert any(big) and len(set(big)) > 200  # all 256 values are near-certain
        a, b = await rig.driver.read(32), await rig.driver.read(32)
        assert a != b
        assert rig.device.delivered == rig.driver.received == sum(sizes) + 64
        rig.driver.close()

    asyncio.run(scenario())


def test_deterministic_source_proves_the_data_path(transport: str, ring: str) -> None:
    async def scenario() -> None:
        source = SeededSource(seed=7)
        rig = make_rig(transport, ring, source=source, buffer_size=1000)
        sizes = [5, 1000, 1, 2500, 3333, 1]
        reads = await asyncio.gather(*(rig.driver.read(n) for n in sizes))
        got = b"".join(reads)
        # Readers are served in order, so the bytes arrive exactly as the source made them.
        assert got == bytes(source.produced)
        assert got == SeededSource(seed=7).read(sum(sizes))
        assert [len(r) for r in reads] == sizes
        rig.driver.close()

    asyncio.run(scenario())


def test_rate_limit_holds_on_a_simulated_clock(transport: str, ring: str) -> None:
    rate, burst, step, steps = 1000, 256, Fraction(1, 100), 300

    async def scenario() -> None:
        timer = FakeTimer()
        config = RngConfig(rate_limit=RateLimit(rate, burst))
        rig = make_rig(transport, ring, source=SeededSource(), config=config, timer=timer)
        got = bytearray()

        async def reader() -> None:
            while True:
                got.extend(await rig.driver.read_some(4096))

        task = asyncio.create_task(reader())
        await settle()
        assert len(got) == burst  # the bucket starts full, then nothing without time
        for i in range(1, steps + 1):
            timer.advance(float(step))
            await settle()
            assert len(got) <= rate * step * i + burst
        task.cancel()
        elapsed = step * steps
        assert len(got) >= rate * elapsed + burst - config.grant_quantum
        assert rig.device.delivered == len(got)

    asyncio.run(scenario())


def test_rate_limit_holds_in_real_time(transport: str, ring: str) -> None:
    rate, burst, duration = 40_000, 2_000, 0.4

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        config = RngConfig(rate_limit=RateLimit(rate, burst), grant_quantum=256)
        rig = make_rig(transport, ring, config=config, timer=LoopTimer(loop))
        start = time.monotonic()
        total = 0
        while time.monotonic() - start < duration:
            total += len(await rig.driver.read_some(4096))
        elapsed = time.monotonic() - start
        assert total <= rate * elapsed + burst
        assert total >= 0.25 * rate * duration  # generous: the machine is shared
        rig.driver.close()

    asyncio.run(scenario())


def test_hwrng_reader_blocks_until_bytes_arrive(transport: str, ring: str) -> None:
    async def scenario() -> None:
        source = SeededSource(seed=3)
        rig = make_rig(transport, ring, source=source)
        raw = HwRngReader(rig.driver, asyncio.get_running_loop(), timeout=10)
        first = await asyncio.to_thread(raw.read, 100)
        assert 1 <= len(first) <= 100
        buffered = io.BufferedReader(raw)
        exact = await asyncio.to_thread(buffered.read, 5000)
        assert len(exact) == 5000
        assert bytes(source.produced).startswith(first)
        with pytest.raises(RuntimeError):
            raw.read(1)  # on the loop thread it would deadlock
        buffered.close()
        assert raw.closed
        rig.driver.close()

    asyncio.run(scenario())
