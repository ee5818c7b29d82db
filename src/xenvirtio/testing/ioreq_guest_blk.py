"""An HVM guest kernel that uses a virtio-blk disk served through ioreqs: the guest's
`VirtioBlkDriver` (asyncio) over virtio-pci (MSI-X) or virtio-mmio (its GSI), writes a
seeded pattern, flushes, reads the whole disk back and checks it, and reports the
SHA-256 of what the disk must now hold (dom0 compares it with the image file)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from typing import Any

from xenvirtio.drivers.blk.driver import DEFAULT_RING_FEATURES, VirtioBlkDriver
from xenvirtio.hv.api.guest import Guest
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.testing.ioreq_guest import Report, contiguous_pages, open_device, run_reported
from xenvirtio.transport.dma import DmaWindow
from xenvirtio.transport.ioreq.guest_irq import GuestIrqRouter

DMA_PAGES = 512  # 2 MiB of bounce buffers and rings
SECTOR = 512


def blk_kernel(guest: Guest, cmdline: str) -> int:
    """Command line: {"kind", "base", "gsi", "seed", "writes", "packed"}."""
    args = json.loads(cmdline)
    return run_reported(guest, lambda report: asyncio.run(_blk(guest, args, report)))


async def _blk(guest: Guest, args: dict[str, Any], report: Report) -> None:
    loop = asyncio.get_running_loop()
    router = GuestIrqRouter.of_guest(guest)
    mem = FlatMemory(buffer=guest.memory)
    window = DmaWindow(mem, contiguous_pages(guest, DMA_PAGES), DMA_PAGES * XEN_PAGE_SIZE)
    spec = {"device_id": int(S.VirtioDeviceId.BLOCK), **args}
    dev = open_device(guest, router, spec, dma=window)
    ring = DEFAULT_RING_FEATURES
    if not args.get("packed"):
        ring &= ~(1 << S.VIRTIO_F_RING_PACKED)
    driver = VirtioBlkDriver(dev.drv, ring_features=ring)
    dev.irq.hook = driver.interrupt
    for fd in router.fds():
        loop.add_reader(fd, router.poll)
    try:
        expected = await _exercise(driver, random.Random(args["seed"]), args["writes"])
        report.put(
            "result",
            {
                "sha256": hashlib.sha256(expected).hexdigest(),
                "size": driver.size,
                "serial": await driver.get_id(),
                "packed": bool(driver.features >> S.VIRTIO_F_RING_PACKED & 1),
                "interrupts": dev.irq.count,
            },
        )
    finally:
        for fd in router.fds():
            loop.remove_reader(fd)
        driver.close()
        router.close()


async def _exercise(driver: VirtioBlkDriver, rng: random.Random, writes: int) -> bytes:
    """Seeded writes (some in flight together), flush, read everything back, compare."""
    size = driver.size
    expected = bytearray(size)
    for _ in range(writes // 4):
        batch: list[tuple[int, int, bytes]] = []
        for _ in range(4):  # four disjoint writes at once: order cannot matter
            sectors = rng.randint(1, 64)
            start = rng.randrange(0, size // SECTOR - sectors) * SECTOR
            if any(s < start + sectors * SECTOR and start < e for s, e, _ in batch):
                continue
            batch.append((start, start + sectors * SECTOR, rng.randbytes(sectors * SECTOR)))
        await asyncio.gather(*(driver.write(s, data) for s, _, data in batch))
        for s, e, data in batch:
            expected[s:e] = data
    await driver.flush()
    back = await driver.read(0, size)
    if back != expected:
        bad = next(i for i in range(size) if back[i] != expected[i])
        raise AssertionError(f"disk differs from what was written, first at byte {bad}")
    return bytes(expected)
