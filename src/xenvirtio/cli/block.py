"""`xenvirtio block-attach` / `block-detach`: disks of running domains (as ``xl``)."""

from __future__ import annotations

from pathlib import Path

import click

from xenvirtio.cli.toolstack_opts import host, host_options, one_line_errors


@click.command("block-attach")
@click.argument("domain")
@click.argument("diskspec")
@host_options
@one_line_errors
def block_attach(domain: str, diskspec: str, run_dir: Path | None, hypervisor: str,
                 verbose: bool) -> None:  # fmt: skip
    """Add a disk to running DOMAIN; DISKSPEC is an xl disk string. Returns once the guest
    serves it, and prints its NBD socket. Disks join over XenBus (the default here);
    transport=pci or mmio is refused: those cannot be hot-plugged.

    \b
    Example:
      xenvirtio block-attach --run-dir /tmp/xv demo 'data.img,raw,xvdb,rw'
    """
    from xenvirtio.toolstack.block import block_attach as attach

    with host(run_dir, hypervisor) as h:
        endpoint = attach(h, domain, diskspec)
    click.echo(f"{endpoint.kind} {endpoint.name} ({endpoint.transport}): nbd socket {endpoint.nbd}")


@click.command("block-detach")
@click.argument("domain")
@click.argument("vdev")
@host_options
@one_line_errors
def block_detach(domain: str, vdev: str, run_dir: Path | None, hypervisor: str,
                 verbose: bool) -> None:  # fmt: skip
    """Remove disk VDEV from running DOMAIN: the guest closes its export and leaves the
    device, then the backend and the XenStore nodes go.

    \b
    Example:
      xenvirtio block-detach --run-dir /tmp/xv demo xvdb
    """
    from xenvirtio.toolstack.block import block_detach as detach

    with host(run_dir, hypervisor) as h:
        detach(h, domain, vdev)
    click.echo(f"{vdev} detached from {domain}")
