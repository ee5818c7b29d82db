"""virtio-blk benchmark: fio through the NBD export of the whole in-process stack

    fio --ioengine=nbd -> NbdServer -> VirtioBlkDriver -> transport -> VirtioBlkDevice
    (thread-pool engine) -> image file

beside ``nbdkit file`` serving the same image (the baseline, measured in the same run).
Workloads: 4k random read at QD1 and QD16, 128k sequential read and write.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenvirtio.bench.fio import FioFigures, FioJob, NbdkitFileServer, run_fio
from xenvirtio.testing.blk_stack import BlkStack, TransportKind

WORKLOADS: tuple[tuple[str, str, str, int], ...] = (
    # name, fio rw, block size, iodepth
    ("4k randread QD1", "randread", "4k", 1),
    ("4k randread QD16", "randread", "4k", 16),
    ("128k seq read QD16", "read", "128k", 16),
    ("128k seq write QD16", "write", "128k", 16),
)
TRANSPORT_NAMES = {
    "mmio": "virtio-mmio (in-process bus)",
    "pci": "virtio-pci, MSI-X (in-process bus)",
    "pci-intx": "virtio-pci, INT#x (in-process bus)",
}


@dataclass(frozen=True)
class Row:
    workload: str
    server: str
    figures: FioFigures


def _make_image(path: Path, size: int) -> None:
    """Random (incompressible, allocated) contents: reads hit real data, not holes."""
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with open(path, "wb") as f:
        for i in range(size // len(chunk)):
            f.write(chunk[i % 256 :] + chunk[: i % 256])


def _figures(uri: str, rw: str, bs: str, depth: int, runtime: float) -> FioFigures:
    job = FioJob(rw=rw, bs=bs, iodepth=depth, runtime_s=runtime, name="blk")
    result = run_fio(uri, job, timeout=runtime * 10 + 60)
    return result.write if rw == "write" else result.read


def measure(
    workdir: Path,
    *,
    runtime: float,
    image_size: int,
    transport: TransportKind = "pci",
    workers: int = 8,
) -> list[Row]:
    """Every workload against our stack, nbdkit and classic blkif, on one image. Our stack
    and nbdkit run throughout and each workload runs on both back to back, so a change of
    load on the machine during the run affects both sides of a comparison alike; blkif
    runs after them on its own emu host."""
    image = workdir / "bench.img"
    _make_image(image, image_size)
    rows: list[Row] = []
    with (
        BlkStack(image, transport=transport, packed=True, workers=workers) as stack,
        NbdkitFileServer(image, workdir / "nbdkit.sock") as server,
    ):
        uri = stack.serve_nbd(workdir / "xv.sock")
        for name, rw, bs, depth in WORKLOADS:
            rows.append(Row(name, "xenvirtio", _figures(uri, rw, bs, depth, runtime)))
            rows.append(Row(name, "nbdkit file", _figures(server.uri, rw, bs, depth, runtime)))
    # Xen's classic PV block drivers on the same image, the baseline virtio is measured
    # against. Imported here: bench.blkif builds on this module's workloads.
    from xenvirtio.bench.blkif import measure_blkif

    rows += measure_blkif(workdir, image, runtime=runtime)
    return rows


def report(rows: list[Row]) -> list[str]:
    """The table, then each workload's xenvirtio throughput as a share of nbdkit's."""
    lines = [f"{'workload':<22}{'server':<13}{'IOPS':>9}{'MB/s':>9}{'p50 us':>9}{'p99 us':>9}"]
    shares = []
    for name, _, _, _ in WORKLOADS:
        mine = [r for r in rows if r.workload == name]
        for row in mine:
            f = row.figures
            lines.append(
                f"{name:<22}{row.server:<13}{f.iops:>9.0f}{f.mb_per_s:>9.1f}"
                f"{f.lat_p50_us:>9.0f}{f.lat_p99_us:>9.0f}"
            )
        ours = next((r.figures.iops for r in mine if r.server == "xenvirtio"), 0.0)
        base = next((r.figures.iops for r in mine if r.server == "nbdkit file"), 0.0)
        if base:
            shares.append(f"{name}: xenvirtio at {100 * ours / base:.0f}% of nbdkit")
    return [*lines, *shares]


def run(
    quick: bool,
    emit: Callable[[str], None] = print,
    *,
    transport: TransportKind = "pci",
    runtime: float | None = None,
) -> list[Row]:
    """Measure and print; returns the rows."""
    runtime = runtime or (1.0 if quick else 5.0)
    size = (64 if quick else 256) << 20
    emit(f"virtio-blk via NBD export; transport: {TRANSPORT_NAMES[transport]}; packed rings;")
    emit(f"thread-pool engine; image {size >> 20} MiB; {runtime:g} s per workload; fio nbd engine")
    with tempfile.TemporaryDirectory(prefix="xv-bench-blk-") as tmp:
        rows = measure(Path(tmp), runtime=runtime, image_size=size, transport=transport)
    for line in report(rows):
        emit(line)
    return rows
