"""The fio benchmark helpers, run once with tiny runtimes against our server and nbdkit."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbd_support import make_image

from xenvirtio.bench.fio import (
    FioError,
    FioFigures,
    FioJob,
    NbdkitFileServer,
    parse_fio_json,
    run_fio,
    run_nbdkit_baseline,
    xenvirtio_file_export,
)
from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop

JOB = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=16, runtime_s=1)


def check_figures(side: FioFigures) -> None:
    assert side.ios > 0 and side.iops > 0
    # bandwidth and IOPS come from the same runtime: MB/s = IOPS x 4 KiB.
    assert side.mb_per_s == pytest.approx(side.iops * 4096 / 1e6, rel=0.02)
    assert 0 < side.lat_p50_us <= side.lat_p99_us


def test_fio_through_our_server_and_the_nbdkit_baseline(tmp_path: Path) -> None:
    require_tool("fio")
    require_tool("nbdkit")
    image = tmp_path / "disk.img"
    make_image(image, 16 << 20)
    with xenvirtio_file_export(image, tmp_path / "ours.sock") as uri:
        ours = run_fio(uri, JOB, timeout=60)
    baseline = run_nbdkit_baseline(image, JOB, tmp_path, timeout=60)
    for result in (ours, baseline):
        check_figures(result.read)
        check_figures(result.write)
        assert result.iops == result.read.iops + result.write.iops
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]  # sockets, pid file gone


def test_nbdkit_that_cannot_start_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    require_tool("nbdkit")
    with (
        pytest.raises(FioError, match="nbdkit exited"),
        NbdkitFileServer(tmp_path / "missing.img", tmp_path / "k.sock"),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


def test_fio_failures_are_errors(tmp_path: Path) -> None:
    require_tool("fio")
    with pytest.raises(FioError, match="fio exited"):
        run_fio(f"nbd+unix:///?socket={tmp_path / 'nobody.sock'}", JOB, timeout=60)
    with pytest.raises(FioError, match="no fio JSON"):
        parse_fio_json("fio: connected to NBD server\nnot json\n")
    with pytest.raises(FioError, match="error 5"):
        parse_fio_json('{\n"jobs": [{"jobname": "x", "error": 5}]}')
