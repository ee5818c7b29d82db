"""Guest driver -> virtio-mmio / virtio-pci -> device model -> image file, in one
process: random concurrent workloads checked against a model, durability, read-only
devices, grant DMA, multiqueue, and replay of in-flight requests across a reset."""

from __future__ import annotations

import asyncio
import errno
import os
import time
import zlib
from pathlib import Path

import pytest
from blk_support import Model, make_image, workload

from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.nbd.backend import BlockIOError
from xenvirtio.spec import virtio_blk as B
from xenvirtio.testing.blk_stack import BlkStack

SIZE = 4 << 20
SECTOR = 512


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "disk.img", SIZE, bytes(range(251)))


@pytest.mark.parametrize("engine", ["sync", "threads"])
@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
@pytest.mark.parametrize("transport", ["mmio", "pci", "pci-intx"])
def test_random_workload_matches_the_model_and_the_image(
    image: Path, transport: str, packed: bool, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    model = Model(image.read_bytes())
    seed = zlib.crc32(f"{transport}-{packed}-{engine}".encode())
    with BlkStack(image, transport=transport, packed=packed, engine=engine) as stack:  # type: ignore[arg-type]
        drv = stack.driver
        assert drv.size == SIZE and drv.can_trim and drv.can_write_zeroes
        assert bool(drv.features >> 34 & 1) == packed  # VIRTIO_F_RING_PACKED
        rings = stack.disks[0].dma.in_use
        stack.run(workload(drv, model, seed, rounds=12))
        assert stack.disks[0].dma.in_use == rings  # every request gave its buffer back
        fd = stack.device.backing.fd
    assert synced.count(fd) >= 1  # every flush reached the file
    model.check(0, image.read_bytes())  # the image holds exactly what was written


def test_flush_calls_fdatasync_each_time(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    with BlkStack(image, engine="threads") as stack:
        fd = stack.device.backing.fd

        async def go() -> None:
            for i in range(5):
                await stack.driver.write(i * 4096, b"d" * 4096)
                await stack.driver.flush()

        stack.run(go())
    assert synced.count(fd) == 5


def test_read_only_device(image: Path) -> None:
    before = image.read_bytes()
    with BlkStack(image, config=BlkConfig(read_only=True)) as stack:
        drv = stack.driver
        assert drv.read_only and not drv.can_trim
        with pytest.raises(BlockIOError) as info:
            stack.run(drv.write(0, b"x" * 512))
        assert info.value.errno == errno.EPERM  # refused before reaching the device
        assert stack.run(drv.read(0, 4096)) == before[:4096]
    # A driver that ignores VIRTIO_BLK_F_RO sends the write; the device answers IOERR.
    with BlkStack(image, config=BlkConfig(read_only=True), exclude=1 << B.VIRTIO_BLK_F_RO) as stack:
        assert not stack.driver.read_only
        with pytest.raises(BlockIOError) as info:
            stack.run(stack.driver.write(0, b"x" * 512))
        assert info.value.errno == errno.EIO
    assert image.read_bytes() == before


def test_out_of_range_request_is_eio_and_the_disk_keeps_working(image: Path) -> None:
    with BlkStack(image) as stack:
        with pytest.raises(BlockIOError) as info:
            stack.run(stack.driver.read(SIZE, 4096))
        assert info.value.errno == errno.EIO
        assert stack.run(stack.driver.read(0, 512)) == image.read_bytes()[:512]


def test_get_id_and_block_size(image: Path) -> None:
    config = BlkConfig(serial="xv-0123456789abcdef!", blk_size=4096)
    with BlkStack(image, config=config) as stack:
        assert stack.run(stack.driver.get_id()) == "xv-0123456789abcdef!"
        assert stack.driver.block_size == 4096


@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_grant_dma_guest(image: Path, transport: str) -> None:
    model = Model(image.read_bytes())
    with BlkStack(image, transport=transport, grant_dma=True, mem_size=8 << 20) as stack:  # type: ignore[arg-type]
        stack.run(workload(stack.driver, model, 7, rounds=4))
        assert stack.granted and all(g >= 0x100 for g in stack.granted)
        addr = stack.driver.queue_configs[0].desc_addr
        assert addr >> 63 == 1  # the device was given grant-DMA addresses
    model.check(0, image.read_bytes())


def test_multiqueue_uses_every_queue(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Model(image.read_bytes())
    with BlkStack(image, config=BlkConfig(num_queues=4), transport="pci") as stack:
        kicked: set[int] = set()
        notify = stack.device.queue_notify

        def spy(index: int) -> None:
            kicked.add(index)
            notify(index)

        monkeypatch.setattr(stack.device, "queue_notify", spy)
        assert stack.driver.num_queues == 4
        stack.run(workload(stack.driver, model, 3, rounds=6))
    assert kicked == {0, 1, 2, 3}
    model.check(0, image.read_bytes())


def test_reconnect_replays_requests_in_flight(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwritev
    writes: list[int] = []

    def slow(fd: int, buffers: list[memoryview], offset: int, *flags: int) -> int:
        writes.append(offset)
        time.sleep(0.1)
        return real(fd, buffers, offset, *flags)

    monkeypatch.setattr(os, "pwritev", slow)
    with BlkStack(image, engine="threads", workers=2) as stack:
        drv = stack.driver

        async def go() -> None:
            tasks = [
                asyncio.ensure_future(drv.write(i * 4096, bytes([i]) * 4096)) for i in range(12)
            ]
            while len(writes) < 2:  # both workers busy, ten requests still waiting
                await asyncio.sleep(0.005)
            assert not all(t.done() for t in tasks)  # 12 writes take >= 0.6 s
            drv.reconnect()  # what the transport layer calls when the device restarts
            await asyncio.gather(*tasks)
            await drv.flush()

        stack.run(go())
        assert drv.reconnects == 1 and not drv.broken
        assert stack.run(drv.read(0, 12 * 4096)) == b"".join(bytes([i]) * 4096 for i in range(12))
    assert len(writes) > 12  # requests the reset interrupted ran again
    assert image.read_bytes()[: 12 * 4096] == b"".join(bytes([i]) * 4096 for i in range(12))
