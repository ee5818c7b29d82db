"""A `DomainConfig`'s devices as the runtime's frozen specs (`xenvirtio.runtime.specs`).

    devices = runtime_specs(cfg, resolve_domid=lookup)   # ConfigError at the entry's line
    devices.specs      # DiskSpec(...), ... checked by the runtime's own rules
    devices.pending    # devices the runtime has no spec kind for yet, by name

Device IDs are numbered per transport in file order (disks, then vifs, then virtio
entries), so the same file always gives the same guest layout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.runtime.specs import (
    MAX_DOMID,
    DeviceSpec,
    DiskSpec,
    SpecError,
    check_domain_devices,
    check_spec,
)
from xenvirtio.toolstack.domcfg import Disk, DomainConfig
from xenvirtio.toolstack.errors import ConfigError
from xenvirtio.toolstack.options import Specification, is_dom0

DomidResolver = Callable[[str], int]


def numeric_domid(backend: str) -> int:
    """dom0 or a numeric id; a domain *name* needs a resolver that can look it up."""
    if is_dom0(backend):
        return 0
    if backend.isdigit() and int(backend) <= MAX_DOMID:
        return int(backend)
    raise LookupError(f"backend={backend}: no domain of that name is known")


@dataclass(frozen=True)
class RuntimeDevices:
    specs: tuple[DeviceSpec, ...]
    pending: tuple[str, ...]


def _disk_spec(disk: Disk, devid: int, domid: int) -> DiskSpec:
    return DiskSpec(
        devid=devid,
        vdev=disk.vdev,
        image=disk.target,
        read_only=disk.readonly,
        transport=disk.channel.transport.value,
        backend_domid=domid,
        grant_usage=disk.channel.grant_usage,
    )


def runtime_specs(
    cfg: DomainConfig, resolve_domid: DomidResolver = numeric_domid
) -> RuntimeDevices:
    """Every device the runtime can run as a checked spec; the rest named in ``pending``."""
    devids: Counter[str] = Counter()
    specs: list[DeviceSpec] = []
    lines: list[int] = []
    pending: list[str] = []
    for disk in cfg.disks:
        if disk.channel.specification is Specification.XEN:
            pending.append(f"disk {disk.vdev} (classic blkif)")
            continue
        transport = disk.channel.transport.value
        where = f"disk {disk.vdev}"
        try:
            domid = resolve_domid(disk.channel.backend)
            spec = check_spec(_disk_spec(disk, devids[transport], domid), where)
        except (SpecError, LookupError) as exc:
            raise ConfigError(cfg.source, disk.line, "disk", str(exc)) from None
        devids[transport] += 1
        specs.append(spec)
        lines.append(disk.line)
    pending += [f"vif {nic.index} ({nic.channel.specification}-net)" for nic in cfg.nics]
    pending += [f"{dev.kind} (virtio)" for dev in cfg.virtio]
    try:
        check_domain_devices(specs)
    except SpecError as exc:
        raise ConfigError(cfg.source, lines[0] if lines else 0, "disk", str(exc)) from None
    return RuntimeDevices(tuple(specs), tuple(pending))
