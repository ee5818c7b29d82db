"""What the domain commands (create, destroy, shutdown, list, block-*) share: how they
find the host, and how they report an error (one line; the details with --verbose)."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from xenvirtio.runtime.hypervisor import RUN_DIR_ENV, default_run_dir

if TYPE_CHECKING:
    from xenvirtio.runtime.hypervisor import HypervisorKind
    from xenvirtio.toolstack.lifecycle import Host

F = TypeVar("F", bound=Callable[..., Any])


def host_options(fn: F) -> F:
    """--run-dir, --hypervisor and --verbose."""
    fn = click.option("-v", "--verbose", is_flag=True, help="Show the details of an error.")(fn)
    fn = click.option(
        "--hypervisor", type=click.Choice(["emu", "xen"]), default="emu", show_default=True,
        help="emu: Xen emulated in user space (xenvirtio host start); xen: a real Xen host.",
    )(fn)  # fmt: skip
    return click.option(
        "--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        envvar=RUN_DIR_ENV, help=f"The emu host's run directory [default: ${RUN_DIR_ENV}].",
    )(fn)  # fmt: skip


@contextmanager
def host(run_dir: Path | None, hypervisor: str) -> Iterator[Host]:
    from xenvirtio.toolstack.lifecycle import open_host

    kind = cast("HypervisorKind", hypervisor)
    with open_host(run_dir if run_dir is not None else default_run_dir(), kind) as h:
        yield h


def one_line_errors(fn: F) -> F:
    """Turn the toolstack's errors into ``error: ...`` on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from xenvirtio.toolstack.errors import ConfigError
        from xenvirtio.toolstack.lifecycle import ToolstackError

        try:
            return fn(*args, **kwargs)
        except (ToolstackError, ConfigError) as exc:
            if kwargs.get("verbose"):
                click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]
