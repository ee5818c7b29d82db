"""`xenvirtio bench evtchn`: event channel round trips beside a bare eventfd ping-pong."""

from __future__ import annotations

from pathlib import Path

import click

from xenvirtio.runtime.hypervisor import RUN_DIR_ENV


@click.command("evtchn")
@click.option("--quick", is_flag=True, help="A short run (2,000 round trips).")
@click.option("--rounds", default=20000, show_default=True, type=click.IntRange(10, 10**7))
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=RUN_DIR_ENV,
    help="Use the emu host running here [default: start a private one].",
)
def bench_evtchn(quick: bool, rounds: int, run_dir: Path | None) -> None:
    """Inter-process event channel latency (p50/p99) and events/s on emu.

    dom0 (this process) and a domain process ping-pong over one interdomain event
    channel; the same run measures two processes ping-ponging over bare eventfds.

    \b
    Example:
      xenvirtio bench evtchn --quick
    """
    from xenvirtio.bench.evtchn import run

    run(2000 if quick else rounds, run_dir, emit=click.echo)
