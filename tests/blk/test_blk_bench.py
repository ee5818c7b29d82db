"""`xenvirtio bench blk --quick` runs fio against our stack, nbdkit and classic blkif."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from xenvirtio.bench.blk import WORKLOADS
from xenvirtio.cli import cli
from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop
ROW = re.compile(r"^(?P<name>.+?)\s{2,}(?P<server>xenvirtio|nbdkit file|blkif)\s+(?P<iops>\d+)\s+"
                 r"(?P<mbs>[\d.]+)\s+(?P<p50>\d+)\s+(?P<p99>\d+)$")  # fmt: skip


def test_quick_benchmark_prints_every_workload_beside_nbdkit() -> None:
    require_tool("fio")
    require_tool("nbdkit")
    result = CliRunner().invoke(cli, ["bench", "blk", "--quick"])
    assert result.exit_code == 0, result.output
    assert "transport: virtio-pci" in result.output
    rows = {(m["name"], m["server"]): m for m in map(ROW.match, result.output.splitlines()) if m}
    for name, *_ in WORKLOADS:
        for server in ("xenvirtio", "nbdkit file", "blkif"):
            row = rows[(name, server)]
            assert int(row["iops"]) > 0 and float(row["mbs"]) > 0, (name, server)
            assert int(row["p99"]) >= int(row["p50"]) > 0
