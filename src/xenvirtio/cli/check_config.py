"""`xenvirtio check-config`: parse and validate an xl.cfg domain config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from xenvirtio.toolstack.domcfg import DomainConfig


def _stand_in_domid(backend: str) -> int:
    """Backends named in the file are looked up only when the domain is created; for a
    check, any valid domid shows whether the runtime accepts the device."""
    from xenvirtio.toolstack.options import is_dom0

    return 0 if is_dom0(backend) else int(backend) if backend.isdigit() else 1


def describe(cfg: DomainConfig) -> list[str]:
    """The domain as lines of text, one per device."""
    lines = [f"domain {cfg.name}: {cfg.type}, {cfg.memory} MiB, {cfg.vcpus} vcpu(s)"]
    for disk in cfg.disks:
        mode = "ro" if disk.readonly else "rw"
        lines.append(f"  disk {disk.vdev}: {disk.target} {mode}; {disk.channel.describe()}")
    for nic in cfg.nics:
        extra = "".join(
            f" {label} {value}"
            for label, value in (
                ("mac", nic.mac or "(chosen at create)"),
                ("bridge", nic.bridge),
                ("ip", " ".join(nic.ips) or None),
                ("mtu", nic.mtu),
            )
            if value is not None
        )
        lines.append(f"  vif {nic.index}:{extra}; {nic.channel.describe()}")
    for dev in cfg.virtio:
        lines.append(f"  {dev.kind}: virtio device {int(dev.device)}; {dev.channel.describe()}")
    return lines


@click.command("check-config")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the domain as JSON.")
def check_config(config: Path, as_json: bool) -> None:
    """Parse and validate an xl.cfg domain config (CONFIG), then print the domain.

    Errors print as one line, FILE:LINE: key: message, and exit with status 1.
    Warnings (keys accepted but ignored) go to stderr.

    \b
    Example:
      xenvirtio check-config examples/demo.cfg
      xenvirtio check-config --json examples/hvm-pci.cfg
    """
    from xenvirtio.toolstack.errors import ConfigError
    from xenvirtio.toolstack.load import load_domain_config
    from xenvirtio.toolstack.runtime_specs import runtime_specs

    try:
        cfg = load_domain_config(config)
        devices = runtime_specs(cfg, _stand_in_domid)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    for warning in cfg.warnings:
        click.echo(str(warning), err=True)
    if as_json:
        data = cfg.to_json()
        data["runtime_pending"] = list(devices.pending)
        click.echo(json.dumps(data, indent=2))
        return
    for line in describe(cfg):
        click.echo(line)
    for disk in cfg.disks:
        if not os.path.exists(disk.target):
            click.echo(f"note: disk {disk.vdev}: {disk.target} does not exist yet", err=True)
