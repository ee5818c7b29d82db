"""The blkif row of the block benchmark: the same fio workloads as `bench.blk`, through

    fio --ioengine=nbd -> NbdServer -> blkfront -> blkif ring, grants, event channels ->
    blkback (dom0) -> image file

on an emu host started for the run. Hook into ``bench/blk.py``'s ``measure`` with
``rows += measure_blkif(workdir, image, runtime=runtime)`` (rows carry server ``blkif``).
"""

from __future__ import annotations

from pathlib import Path

from xenvirtio.bench.blk import WORKLOADS, Row
from xenvirtio.bench.fio import FioFigures, FioJob, run_fio
from xenvirtio.devices.blkif.backend import BlkbackConfig
from xenvirtio.drivers.blkif.frontend import BlkfrontConfig
from xenvirtio.hv.emu.host import start_host, stop_host
from xenvirtio.testing.blkif_stack import BlkifStack

DEFAULT_FRONT = BlkfrontConfig(num_queues=1, ring_page_order=0, indirect_segments=32)


def _figures(uri: str, rw: str, bs: str, depth: int, runtime: float) -> FioFigures:
    job = FioJob(rw=rw, bs=bs, iodepth=depth, runtime_s=runtime, name="blkif")
    result = run_fio(uri, job, timeout=runtime * 10 + 60)
    return result.write if rw == "write" else result.read


def measure_blkif(
    workdir: Path,
    image: Path,
    *,
    runtime: float,
    front: BlkfrontConfig = DEFAULT_FRONT,
    back: BlkbackConfig | None = None,
    server: str = "blkif",
) -> list[Row]:
    """Every workload of `bench.blk.WORKLOADS` through a blkif stack on ``image``."""
    run_dir = workdir / "emu"
    run_dir.mkdir(exist_ok=True)
    start_host(run_dir)
    try:
        with BlkifStack(run_dir, image, front=front, back=back) as stack:
            uri = stack.serve_nbd(workdir / "blkif.sock")
            return [
                Row(name, server, _figures(uri, rw, bs, depth, runtime))
                for name, rw, bs, depth in WORKLOADS
            ]
    finally:
        stop_host(run_dir)
