"""`xenvirtio bench net --quick` runs end to end and prints every column."""

from __future__ import annotations

from click.testing import CliRunner

from xenvirtio.cli import cli
from xenvirtio.testing.tools import require_tool


def test_bench_net_quick() -> None:
    require_tool("iperf3")
    result = CliRunner().invoke(cli, ["bench", "net", "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {line[:26].strip(): line[26:].split() for line in result.output.splitlines()[3:]}
    assert set(rows) == {"TCP 1 stream, Gbit/s", "TCP 4 streams, Gbit/s", "TCP_RR, transactions/s"}
    for virtio, netif, veth, _ratio in rows.values():
        for figure in (virtio, netif, veth):
            assert float(figure.replace(",", "")) > 0
