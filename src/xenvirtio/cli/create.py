"""`xenvirtio create`: start a domain from an xl.cfg file (``xl create``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from xenvirtio.cli.toolstack_opts import host, host_options, one_line_errors

if TYPE_CHECKING:
    from xenvirtio.runtime.domain import DeviceEndpoint


@click.command("create")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@host_options
@one_line_errors
def create(config: Path, run_dir: Path | None, hypervisor: str, verbose: bool) -> None:
    """Start the domain described by CONFIG (an xl.cfg file) and print its devices.

    The config is checked first (an error names FILE:LINE: key and nothing is made).
    Then the domain is created, its backend process started and its guest kernel
    booted; the command returns once every device is ready and prints the domid and
    where each device is reached (a disk's NBD socket, a NIC's network namespace, a
    console's pty, an rng's socket). Any failure undoes everything.
    Devices the runtime cannot run yet are listed as pending.

    \b
    Example:
      xenvirtio host start --run-dir /tmp/xv
      xenvirtio create --run-dir /tmp/xv examples/demo.cfg
      nbdinfo 'nbd+unix:///xvda?socket=/tmp/xv/domains/1/xvda.nbd'
    """
    from xenvirtio.toolstack.lifecycle import create_domain
    from xenvirtio.toolstack.load import load_domain_config

    cfg = load_domain_config(config)
    for warning in cfg.warnings:
        click.echo(str(warning), err=True)
    with host(run_dir, hypervisor) as h:
        created = create_domain(h, cfg, progress=lambda line: click.echo(line, err=True))
    click.echo(f"domain {created.name}: domid {created.domid}")
    for device in created.devices:
        click.echo(f"  {device.kind} {device.name} ({device.transport}): {_where(device)}")
    for name in created.pending:
        click.echo(f"  {name}: pending: the runtime cannot run this kind of device yet")


def _where(device: DeviceEndpoint) -> str:
    if device.nbd is not None:
        return f"nbd socket {device.nbd}"
    if device.netns is not None:
        return f"{device.ifname} {device.ip or ''} {device.mac} in netns {device.netns}"
    if device.pty is not None:
        return f"pty {device.pty}"
    if device.socket is not None:
        return f"socket {device.socket}"
    return device.state
