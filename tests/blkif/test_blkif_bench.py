"""The blkif benchmark row runs (quick: short workloads) and measures real I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenvirtio.bench.blk import WORKLOADS
from xenvirtio.bench.blkif import measure_blkif
from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop


def test_measure_blkif_quick(tmp_path: Path) -> None:
    require_tool("fio")
    image = tmp_path / "bench.img"
    image.write_bytes(bytes(range(256)) * (8 << 20 >> 8))
    rows = measure_blkif(tmp_path, image, runtime=0.3)
    assert [r.workload for r in rows] == [w[0] for w in WORKLOADS]
    assert all(r.server == "blkif" and r.figures.iops > 0 for r in rows)
