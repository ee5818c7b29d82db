"""`xenvirtio network-attach` / `network-detach`: NICs of running domains (as ``xl``)."""

from __future__ import annotations

from pathlib import Path

import click

from xenvirtio.cli.toolstack_opts import host, host_options, one_line_errors


@click.command("network-attach")
@click.argument("domain")
@click.argument("vifspec", default="")
@host_options
@one_line_errors
def network_attach(domain: str, vifspec: str, run_dir: Path | None, hypervisor: str,
                   verbose: bool) -> None:  # fmt: skip
    """Add a virtio-net NIC to running DOMAIN; VIFSPEC is an xl vif string (empty: every
    default). Returns once the guest has the interface up, and prints its name, MAC,
    address and network namespace. NICs join over XenBus (the default here);
    transport=pci or mmio is refused: those cannot be hot-plugged.

    \b
    Example:
      xenvirtio network-attach --run-dir /tmp/xv demo 'bridge=xenbr0,ip=10.0.0.3/24'
    """
    from xenvirtio.toolstack.network import network_attach as attach

    with host(run_dir, hypervisor) as h:
        e = attach(h, domain, vifspec)
    click.echo(f"{e.kind} {e.name} ({e.transport}): mac {e.mac} ip {e.ip or '-'} netns {e.netns}")


@click.command("network-detach")
@click.argument("domain")
@click.argument("nic", metavar="DEVID|MAC")
@host_options
@one_line_errors
def network_detach(domain: str, nic: str, run_dir: Path | None, hypervisor: str,
                   verbose: bool) -> None:  # fmt: skip
    """Remove a NIC from running DOMAIN, named by its devid or MAC (as xl; its guest
    interface name, eth<N>, works too): the guest closes its interface and leaves the
    device, then the backend's TAP and the XenStore nodes go.

    \b
    Example:
      xenvirtio network-detach --run-dir /tmp/xv demo 00:16:3e:00:00:22
    """
    from xenvirtio.toolstack.network import network_detach as detach

    with host(run_dir, hypervisor) as h:
        spec = detach(h, domain, nic)
    click.echo(f"{spec.ifname} ({spec.mac}) detached from {domain}")
