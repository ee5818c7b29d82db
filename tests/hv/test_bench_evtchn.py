"""`xenvirtio bench evtchn --quick` runs and prints both figures."""

import re

from click.testing import CliRunner

from xenvirtio.cli import cli
from xenvirtio.hv.emu.host import HostStatus


def test_quick_benchmark_prints_emu_and_baseline(emu_host: HostStatus) -> None:
    result = CliRunner().invoke(
        cli, ["bench", "evtchn", "--quick", "--run-dir", str(emu_host.run_dir)]
    )
    assert result.exit_code == 0, result.output
    rows = {
        line.split("  ")[0].strip(): line
        for line in result.output.splitlines()
        if "round trips/s" in line
    }
    assert set(rows) == {
        "evtchn, dom0 <-> domain process (emu)",
        "bare eventfd ping-pong, two processes",
    }
    for line in rows.values():
        p50, p99 = (float(x) for x in re.findall(r"p(?:50|99)\s+([\d.]+) us", line))
        assert 0 < p50 <= p99
        assert float(re.search(r"([\d.]+) round trips/s", line).group(1)) > 0  # type: ignore[union-attr]
