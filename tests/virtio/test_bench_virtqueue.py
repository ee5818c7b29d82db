"""`xenvirtio bench virtqueue --quick` runs and prints every row and the baseline."""

from __future__ import annotations

import re

from click.testing import CliRunner

from xenvirtio.cli import cli

ROW = re.compile(
    r"^(?P<scenario>.+?)\s+(?P<ring>split|packed)\s+(?P<descs>[13])\s+(?P<rate>[\d,]+)\s"
)


def test_quick_benchmark_prints_every_row_and_the_baseline() -> None:
    result = CliRunner().invoke(cli, ["bench", "virtqueue", "--quick"])
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        match = ROW.match(line)
        if match:
            key = (match["scenario"].split(",")[0], match["ring"], int(match["descs"]))
            rows.setdefault(key, []).append(int(match["rate"].replace(",", "")))
    for scenario in ("one process", "two processes"):
        for ring in ("split", "packed"):
            for descs in (1, 3):
                rates = rows.get((scenario, ring, descs), [])
                assert rates and all(rate > 0 for rate in rates), (scenario, ring, descs)
    assert len(rows[("two processes", "packed", 1)]) == 2  # batched and 1 in flight
    baseline = re.search(r"baseline: bare eventfd ping-pong\s+-\s+-\s+([\d,]+)", result.output)
    assert baseline and int(baseline.group(1).replace(",", "")) > 0
    assert "target >= 300,000/s" in result.output


def test_queue_size_must_suit_the_split_ring() -> None:
    result = CliRunner().invoke(cli, ["bench", "virtqueue", "--quick", "--queue-size", "100"])
    assert result.exit_code != 0 and "power of 2" in result.output
