"""`xenvirtio bench virtqueue`: chains/s through split and packed virtqueues, in one
process and across two, beside a bare eventfd ping-pong."""

from __future__ import annotations

import click


@click.command("virtqueue")
@click.option("--quick", is_flag=True, help="A short run (a few seconds).")
@click.option(
    "--queue-size", default=256, show_default=True, type=click.IntRange(4, 32768),
    help="Queue Size of the measured queue (a power of 2 for the split ring).",
)  # fmt: skip
def bench_virtqueue(quick: bool, queue_size: int) -> None:
    """Virtqueue throughput: chains/s for split and packed rings, 1- and 3-descriptor
    chains, in one process and between two processes sharing a memfd with eventfd
    kicks and interrupts (batched, and one chain in flight), next to a bare eventfd
    ping-pong between two processes measured in the same run.

    \b
    Example:
      xenvirtio bench virtqueue --quick
    """
    if queue_size & (queue_size - 1):
        raise click.BadParameter("must be a power of 2", param_hint="--queue-size")
    from xenvirtio.bench.virtqueue import Plan, run

    plan = Plan.quick() if quick else Plan.full()
    run(Plan(plan.in_process, plan.batched, plan.in_flight, queue_size), emit=click.echo)
