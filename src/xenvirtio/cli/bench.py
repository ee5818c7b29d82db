"""`xenvirtio bench`: benchmark programs that print figures next to a baseline."""

from __future__ import annotations

import click

from xenvirtio.cli import LazyGroup

# name -> "module:attribute" of a click command; each benchmark registers itself here.
BENCHMARKS: dict[str, str] = {
    "xenstore": "xenvirtio.cli.bench_xenstore:bench_xenstore",
    "evtchn": "xenvirtio.cli.bench_evtchn:bench_evtchn",
    "virtqueue": "xenvirtio.cli.bench_virtqueue:bench_virtqueue",
    "blk": "xenvirtio.cli.bench_blk:bench_blk",
    "net": "xenvirtio.cli.bench_net:bench_net",
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Run benchmarks; each prints its figures beside a baseline measured in the same run.

    \b
    Example:
      xenvirtio bench all
    """


@bench.command("all")
@click.option("--quick", is_flag=True, help="Run each benchmark's short variant.")
@click.pass_context
def bench_all(ctx: click.Context, quick: bool) -> None:
    """Run every benchmark that exists, one after the other.

    A failing benchmark is reported and the others still run; the exit status is
    non-zero if any failed.

    \b
    Example:
      xenvirtio bench all --quick
    """
    names = sorted(BENCHMARKS)
    failed: list[str] = []
    for number, name in enumerate(names, 1):
        click.echo(f"== [{number}/{len(names)}] bench {name} ==")
        command = bench.get_command(ctx, name)
        assert command is not None
        takes_quick = any(param.name == "quick" for param in command.params)
        try:
            ctx.invoke(command, **({"quick": True} if quick and takes_quick else {}))
        except (Exception, SystemExit) as exc:  # one broken benchmark must not hide the rest
            if isinstance(exc, SystemExit) and not exc.code:
                continue
            click.echo(f"bench {name} failed: {exc}", err=True)
            failed.append(name)
    if failed:
        raise click.ClickException(f"benchmarks failed: {', '.join(failed)}")
