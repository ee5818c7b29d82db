"""Two disks served by one device-model instance (one engine, one loop): a hostile driver
scribbling its ring or sending bad requests hurts only its own device."""

from __future__ import annotations

import asyncio
import errno
import struct
from pathlib import Path

import pytest
from blk_support import make_image

from xenvirtio.nbd.backend import BlockIOError
from xenvirtio.spec import virtio as S
from xenvirtio.testing.blk_stack import BlkStack, Disk
from xenvirtio.transport.events import NeedsReset

SIZE = 2 << 20


async def steady_io(disk: Disk, rounds: int) -> int:
    """Write, read back and compare, ``rounds`` times; returns the requests done."""
    for i in range(rounds):
        data = bytes([i & 0xFF]) * 8192
        await disk.driver.write(i * 8192 % SIZE, data)
        assert await disk.driver.read(i * 8192 % SIZE, 8192) == data
    await disk.driver.flush()
    return 2 * rounds + 1


def scribble_avail_idx(disk: Disk) -> None:
    """The hostile guest moves avail idx far beyond what it made available."""
    cfg = disk.driver.queue_configs[0]
    (idx,) = struct.unpack("<H", disk.mem.read(cfg.driver_addr + 2, 2))
    disk.mem.write(cfg.driver_addr + 2, struct.pack("<H", (idx + 1000) & 0xFFFF))
    disk.slot.transport.notify(0)


def needs_reset_events(stack: BlkStack, disk: Disk) -> list[NeedsReset]:
    return [ev for slot, ev in stack.bus.events if slot is disk.slot and isinstance(ev, NeedsReset)]


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [make_image(tmp_path / f"disk{i}.img", SIZE) for i in range(2)]


@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_scribbled_ring_resets_only_its_own_device(images: list[Path], transport: str) -> None:
    with BlkStack(images, transport=transport, engine="threads", auto_reconnect=False) as stack:  # type: ignore[arg-type]
        good, bad = stack.disks

        async def attack() -> int:
            work = asyncio.ensure_future(steady_io(good, 40))
            await asyncio.sleep(0)
            scribble_avail_idx(bad)
            return await work

        assert stack.run(attack()) == 81
        assert needs_reset_events(stack, bad) and not needs_reset_events(stack, good)
        assert bad.device.broken and not good.device.broken
        status = stack.call(bad.slot.transport.get_status)
        assert status & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
        assert not stack.call(good.slot.transport.get_status) & S.VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
        assert stack.run(steady_io(good, 5)) == 11
    assert images[0].read_bytes()[:8192] == bytes([0]) * 8192


def test_bad_requests_fail_alone_and_the_driver_recovers(images: list[Path]) -> None:
    with BlkStack(images, transport="pci", engine="threads") as stack:
        good, bad = stack.disks

        async def attack() -> None:
            work = asyncio.ensure_future(steady_io(good, 40))
            for _ in range(5):  # out-of-range requests: IOERR, the device stays up
                with pytest.raises(BlockIOError) as info:
                    await bad.driver.read(SIZE, 4096)
                assert info.value.errno == errno.EIO
            scribble_avail_idx(bad)  # ... then a broken ring: NEEDS_RESET
            await work

        stack.run(attack())
        assert needs_reset_events(stack, bad) and not needs_reset_events(stack, good)
        # The bad guest's driver saw DEVICE_NEEDS_RESET, reset the device and went on.
        assert bad.driver.reconnects == 1 and not bad.device.broken
        assert stack.run(steady_io(bad, 5)) == 11
        assert good.driver.reconnects == 0
