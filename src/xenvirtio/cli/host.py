"""`xenvirtio host`: start, stop and inspect the emu host (hypervisor + XenStore daemons)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from xenvirtio.runtime.hypervisor import RUN_DIR_ENV, default_run_dir

_run_dir_option = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=RUN_DIR_ENV,
    help=f"Where the host keeps its sockets, pid files and logs [default: ${RUN_DIR_ENV}].",
)


def _resolve(run_dir: Path | None) -> Path:
    return run_dir if run_dir is not None else default_run_dir()


@click.group("host")
def host() -> None:
    """Run Xen emulated in user space: a hypervisor daemon and a XenStore daemon.

    Domains are processes, guest RAM is a memfd, event channels are eventfds. Other
    commands find the host through --run-dir or $XENVIRTIO_RUN_DIR.

    \b
    Example:
      xenvirtio host start --run-dir /tmp/xv
      XENVIRTIO_RUN_DIR=/tmp/xv xenvirtio host status
      xenvirtio host stop --run-dir /tmp/xv
    """


@host.command("start")
@_run_dir_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for readiness.")
def start(run_dir: Path | None, timeout: float) -> None:
    """Start the hypervisor and XenStore daemons in the background; return once ready.

    \b
    Example:
      xenvirtio host start --run-dir /tmp/xv
    """
    from xenvirtio.hv.emu.host import HostError, start_host

    try:
        status = start_host(_resolve(run_dir), timeout=timeout)
    except HostError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"emu host ready in {status.run_dir}: hypervisor pid {status.hv_pid}, "
        f"xenstored pid {status.xenstored_pid}"
    )


@host.command("stop")
@_run_dir_option
def stop(run_dir: Path | None) -> None:
    """Destroy every domain and stop both daemons.

    \b
    Example:
      xenvirtio host stop --run-dir /tmp/xv
    """
    from xenvirtio.hv.emu.host import stop_host
    from xenvirtio.runtime.network import release_host

    stop_host(_resolve(run_dir))
    if os.geteuid() == 0:
        release_host(_resolve(run_dir))  # the domains' network namespaces
    click.echo("emu host stopped")


@host.command("status")
@_run_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(run_dir: Path | None, as_json: bool) -> None:
    """Show the daemons' pids and the domains (like `xl list`).

    \b
    Example:
      xenvirtio host status --run-dir /tmp/xv
    """
    from xenvirtio.hv.emu.host import host_status

    st = host_status(_resolve(run_dir))
    if st.hv_pid is None:
        raise click.ClickException(f"no emu host running in {st.run_dir}")
    if as_json:
        click.echo(json.dumps({**st.details, "xenstored_pid": st.xenstored_pid}, indent=2))
        return
    click.echo(f"run dir      {st.run_dir}")
    click.echo(f"hypervisor   pid {st.hv_pid} (zygote {st.zygote_pid})")
    click.echo(f"xenstored    pid {st.xenstored_pid}")
    click.echo(f"{'Name':<24}{'ID':>5}{'Mem':>7}{'VCPUs':>6}  {'State':<9}{'Pid':>8}")
    for d in sorted(st.domains, key=lambda d: d["domid"]):
        pid = d["pid"] if d["pid"] is not None else "-"
        click.echo(
            f"{d['name']:<24}{d['domid']:>5}{d['memory_mb']:>7}{d['vcpus']:>6}  "
            f"{d['state']:<9}{pid:>8}"
        )
