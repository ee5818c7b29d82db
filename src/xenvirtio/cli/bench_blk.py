"""`xenvirtio bench blk`: virtio-blk through its NBD export, beside nbdkit's file plugin."""

from __future__ import annotations

import click


@click.command("blk")
@click.option("--quick", is_flag=True, help="A few-second run (1 s per workload, 64 MiB image).")
@click.option(
    "--transport",
    type=click.Choice(["pci", "mmio", "pci-intx"]),
    default="pci",
    show_default=True,
    help="Transport between the guest driver and the device model.",
)
@click.option(
    "--runtime",
    type=click.FloatRange(1, 600),
    default=None,
    help="Seconds per workload (default 5, or 1 with --quick).",
)
def bench_blk(quick: bool, transport: str, runtime: float | None) -> None:
    """fio (nbd engine) against the guest's virtio-blk disk exported over NBD.

    The guest driver, the transport and the device model run in this process; the same
    image served by `nbdkit file` is the baseline, measured in the same run. Prints
    IOPS, MB/s and p50/p99 completion latency for 4k random read at QD1 and QD16 and
    128k sequential read and write.

    \b
    Example:
      xenvirtio bench blk --quick
    """
    from xenvirtio.bench.blk import run

    run(quick, click.echo, transport=transport, runtime=runtime)  # type: ignore[arg-type]
