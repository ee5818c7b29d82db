"""fio --verify=crc32c through blkfront's NBD export, blkback serving the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenvirtio.bench.fio import FioJob, run_fio
from xenvirtio.devices.blkif.backend import BlkbackConfig
from xenvirtio.drivers.blkif.frontend import BlkfrontConfig
from xenvirtio.testing.blkif_stack import BlkifStack
from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop

CONFIGS = {
    "grant-copy": (BlkfrontConfig(persistent=False), BlkbackConfig(persistent=False)),
    "persistent-indirect-mq-order1": (
        BlkfrontConfig(num_queues=2, ring_page_order=1, indirect_segments=32),
        BlkbackConfig(),
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fio_verifies_through_blkfront(
    blkif_run_dir: Path, image: Path, tmp_path: Path, name: str
) -> None:
    fio = require_tool("fio")
    front, back = CONFIGS[name]
    job = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=16, runtime_s=None,
                 size="4M", verify="crc32c")  # fmt: skip
    with BlkifStack(blkif_run_dir, image, front=front, back=back) as stack:
        uri = stack.serve_nbd(tmp_path / "nbd.sock")
        result = run_fio(uri, job, timeout=90, fio=fio)
        assert result.write.ios > 0 and result.read.ios > 0
        exported = stack.run(stack.front.read(0, stack.front.size))
        served = sum(q.served for q in stack.runner.backends[str(stack.backend)].queues)  # type: ignore[union-attr]
        assert served >= result.write.ios + result.read.ios
    assert image.read_bytes() == exported  # the image holds exactly what went through
