"""`xenvirtio bench xenstore`: XenStore ops/s and latency beside baselines."""

from __future__ import annotations

import click


@click.command("xenstore")
@click.option("--quick", is_flag=True, help="A few-second run (0.2 s per workload).")
@click.option(
    "--duration",
    type=click.FloatRange(0.05, 600),
    default=2.0,
    show_default=True,
    help="Seconds per workload.",
)
@click.option(
    "--pin/--no-pin",
    default=True,
    show_default=True,
    help="Pin server and clients to CPUs (one shared CPU for 1-client rows).",
)
def bench_xenstore(quick: bool, duration: float, pin: bool) -> None:
    """Measure read, write, directory, transaction and watch-event delivery.

    1 and 32 concurrent clients and a 16-deep pipeline against `xenvirtio xenstored`,
    beside Xen's C xenstored (when it can run here) and a unix-socket echo round trip,
    all measured in this run.

    \b
    Example:
      xenvirtio bench xenstore --quick
    """
    from xenvirtio.bench.xenstore import run

    run(0.2 if quick else duration, emit=click.echo, pin=pin)
