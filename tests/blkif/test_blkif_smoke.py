"""blkfront against blkback on an emu host: data reaches the image, features negotiated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xenvirtio.devices.blkif.backend import BlkbackConfig
from xenvirtio.drivers.blkif.frontend import BlkfrontConfig
from xenvirtio.testing.blkif_stack import BlkifStack

CONFIGS = {
    "plain": (BlkfrontConfig(persistent=False), BlkbackConfig(persistent=False)),
    "persistent": (BlkfrontConfig(), BlkbackConfig()),
    "indirect-mq-order2": (
        BlkfrontConfig(num_queues=3, ring_page_order=2, indirect_segments=64),
        BlkbackConfig(),
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_read_write_flush(blkif_run_dir: Path, image: Path, name: str) -> None:
    front, back = CONFIGS[name]
    with BlkifStack(blkif_run_dir, image, front=front, back=back) as stack:
        assert stack.front.size == image.stat().st_size
        writes = {0: os.urandom(4096), 8192 + 512: os.urandom(1536), 1 << 20: os.urandom(200 << 10)}
        for off, data in writes.items():
            stack.run(stack.front.write(off, data, fua=True))
        for off, data in writes.items():
            assert stack.run(stack.front.read(off, len(data))) == data
        disk = image.read_bytes()
        for off, data in writes.items():
            assert disk[off : off + len(data)] == data
        assert len(stack.front.queues) == front.num_queues
        assert stack.front.queues[0].ring.nr_ents == 32 << front.ring_page_order
        assert stack.front.pages.persistent == front.persistent
