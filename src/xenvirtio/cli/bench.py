"""`xenvirtio bench`: benchmark programs that print figures next to a baseline."""

from __future__ import annotations

import click

from xenvirtio.cli import LazyGroup

# name -> "module:attribute" of a click command; each benchmark registers itself here.
BENCHMARKS: dict[str, str] = {}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Run benchmarks; each prints its figures beside a baseline measured in the same run.

    \b
    Example:
      xenvirtio bench all
    """


@bench.command("all")
@click.pass_context
def bench_all(ctx: click.Context) -> None:
    """Run every benchmark that exists, one after the other.

    \b
    Example:
      xenvirtio bench all
    """
    for name in sorted(BENCHMARKS):
        click.echo(f"== bench {name} ==")
        command = bench.get_command(ctx, name)
        assert command is not None
        ctx.invoke(command)
