"""`xenvirtio destroy`, `shutdown`, `list` and `console`: running domains (as ``xl``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from xenvirtio.cli.toolstack_opts import host, host_options, one_line_errors


@click.command("destroy")
@click.argument("domain")
@host_options
@one_line_errors
def destroy(domain: str, run_dir: Path | None, hypervisor: str, verbose: bool) -> None:
    """Destroy DOMAIN (a name or a domid) at once: backend stopped, domain destroyed,
    XenStore nodes and run-directory files removed.

    \b
    Example:
      xenvirtio destroy --run-dir /tmp/xv demo
    """
    from xenvirtio.toolstack.lifecycle import destroy as destroy_domain

    with host(run_dir, hypervisor) as h:
        info = destroy_domain(h, domain)
    click.echo(f"domain {info.name} (domid {info.domid}) destroyed")


@click.command("shutdown")
@click.argument("domain")
@click.option("--timeout", type=click.FloatRange(0, 600), default=10.0, show_default=True,
              help="Seconds to wait for the guest before destroying it.")  # fmt: skip
@host_options
@one_line_errors
def shutdown(domain: str, timeout: float, run_dir: Path | None, hypervisor: str,
             verbose: bool) -> None:  # fmt: skip
    """Shut DOMAIN down gracefully: write control/shutdown = poweroff, wait for the guest
    to close its devices and stop, then clean up as destroy does. A guest that has not
    stopped after --timeout seconds is destroyed (exit status 2).

    \b
    Example:
      xenvirtio shutdown --run-dir /tmp/xv demo
    """
    from xenvirtio.toolstack.lifecycle import shutdown as shutdown_domain

    with host(run_dir, hypervisor) as h:
        click.echo(f"asking {domain} to power off (up to {timeout:g} s)", err=True)
        info, clean = shutdown_domain(h, domain, timeout)
    if not clean:
        click.echo(f"domain {info.name} did not stop in {timeout:g} s: destroyed", err=True)
        raise SystemExit(2)
    click.echo(f"domain {info.name} (domid {info.domid}) shut down")


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per domain.")
@host_options
@one_line_errors
def list_(as_json: bool, run_dir: Path | None, hypervisor: str, verbose: bool) -> None:
    """List the guest domains and their devices, as they are (a dead backend or guest
    shows in the states).

    \b
    Example:
      xenvirtio list --run-dir /tmp/xv
      xenvirtio list --run-dir /tmp/xv --json | jq '.[].devices[].nbd_socket'
    """
    from xenvirtio.toolstack.listing import list_domains

    with host(run_dir, hypervisor) as h:
        domains = list_domains(h)
        xenstore = h.xenstore
    if not xenstore:
        click.echo("warning: xenstored is not reachable: device states unknown", err=True)
    if as_json:
        click.echo(json.dumps(domains, indent=2))
        return
    click.echo(f"{'Name':<20}{'ID':>5}  {'Type':<5}{'State':<10}Devices")
    for d in domains:
        click.echo(f"{d['name']:<20}{d['domid']:>5}  {d['type']:<5}{d['state']:<10}")
        for dev in d["devices"]:
            where = (dev["nbd_socket"] or dev.get("netns") or dev.get("pty")
                     or dev.get("socket") or dev["error"] or "")  # fmt: skip
            click.echo(f"{'':<42}{dev['name']} {dev['transport'] or '-'} {dev['state']} {where}")


@click.command("console")
@click.argument("domain")
@host_options
@one_line_errors
def console(domain: str, run_dir: Path | None, hypervisor: str, verbose: bool) -> None:
    """Attach to DOMAIN's virtio console (its pty), as ``xl console`` does: what you type
    goes to the guest, what it writes comes back; Ctrl-] detaches. The guest's getty
    answers each line prefixed with its domain name.

    \b
    Example:
      xenvirtio console --run-dir /tmp/xv demo
    """
    from xenvirtio.devices.console.attach import attach
    from xenvirtio.runtime.domain import inspect
    from xenvirtio.toolstack.lifecycle import ToolstackError, find_domain

    with host(run_dir, hypervisor) as h:
        info = find_domain(h, domain)
        view = inspect(h.hv, info.domid, h.run_dir)
    ptys = [d.pty for d in view.devices if d.kind == "console" and d.pty is not None]
    if not ptys:
        raise ToolstackError(f"domain {info.name} has no console (a virtio device3 entry)")
    click.echo(f"attached to {info.name}'s console {ptys[0]} (Ctrl-] detaches)", err=True)
    reason = attach(str(ptys[0]))
    click.echo(f"\ndetached ({reason.value})", err=True)
