"""The netif benchmark column runs (1 s per workload) and measures real traffic."""

from __future__ import annotations

import pytest

from xenvirtio.bench.netif import measure_netif
from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop


def test_measure_netif_quick() -> None:
    require_tool("iperf3")
    figures = measure_netif(1.0)
    assert set(figures) == {
        "TCP 1 stream, Gbit/s", "TCP 4 streams, Gbit/s", "TCP_RR, transactions/s"
    }  # fmt: skip
    assert all(v > 0 for v in figures.values())
