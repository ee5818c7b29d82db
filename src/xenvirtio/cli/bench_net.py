"""`xenvirtio bench net`: virtio-net between two guests, beside a plain veth pair."""

from __future__ import annotations

import click


@click.command("net")
@click.option("--quick", is_flag=True, help="A few-second run (1 s per test).")
@click.option(
    "--transport",
    type=click.Choice(["pci", "mmio", "pci-intx"]),
    default="pci",
    show_default=True,
    help="Transport between the guest drivers and the device models.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1, 600),
    default=None,
    help="Seconds per test (default 5, or 1 with --quick).",
)
def bench_net(quick: bool, transport: str, seconds: float | None) -> None:
    """iperf3 (1 and 4 streams) and TCP_RR between two guests with virtio-net NICs.

    Both guests' drivers, the transports and the device models run in this process; the
    guests' TAPs live in their own network namespaces, the device models' TAPs on a
    bridge in a backend namespace. A veth pair between two namespaces, measured in the
    same run with the same programs, is the baseline. Needs root and iperf3.

    \b
    Example:
      xenvirtio bench net --quick
    """
    from xenvirtio.bench.net import run

    run(quick, click.echo, transport=transport, seconds=seconds)  # type: ignore[arg-type]
