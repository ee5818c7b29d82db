"""A `DomainConfig`'s devices as the runtime's frozen specs (`xenvirtio.runtime.specs`).

    devices = runtime_specs(cfg, resolve_domid=lookup)   # ConfigError at the entry's line
    devices.specs      # DiskSpec(...), NetSpec(...), ... checked by the runtime's rules
    devices.pending    # devices the runtime has no spec kind for yet, by name

Device IDs are numbered per transport in file order (disks, then vifs, then virtio
entries), so the same file always gives the same guest layout. A vif becomes a
`NetSpec` (``eth<index>``; without ``mac=`` one is derived from the domain's name and
the vif's index, under Xen's OUI 00:16:3e; an address without a prefix gets /24, or
/64 for IPv6); ``virtio`` entries become `ConsoleSpec` and `RngSpec`. Classic PV
(``specification=xen``) disks and vifs become the same specs with ``specification``
"xen": vbds numbered on their own, classic vifs with the XenBus virtio devices (a
XenBus virtio NIC's backend TAP has the same ``vif<domid>.<devid>`` name as a vif's).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from xenvirtio.runtime.specs import (
    MAX_DOMID,
    ConsoleSpec,
    DeviceSpec,
    DiskSpec,
    NetSpec,
    RngSpec,
    SpecError,
    check_domain_devices,
    check_spec,
)
from xenvirtio.toolstack.domcfg import Disk, DomainConfig, Nic, VirtioDevice
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
        specification=disk.channel.specification.value,
        devid=devid,
        vdev=disk.vdev,
        image=disk.target,
        read_only=disk.readonly,
        transport=disk.channel.transport.value,
        backend_domid=domid,
        grant_usage=disk.channel.grant_usage,
    )


def derived_mac(domain: str, index: int) -> str:
    """A stable MAC for a vif without ``mac=`` (Xen's OUI, as libxl picks its own)."""
    h = hashlib.sha256(f"{domain}/{index}".encode()).digest()
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in (h[0] & 0x7F, h[1], h[2]))


def with_prefix(ip: str) -> str:
    iface = ipaddress.ip_interface(ip)
    if "/" in ip:
        return str(iface)
    return f"{iface.ip}/{24 if iface.version == 4 else 64}"


def _net_spec(cfg: DomainConfig, nic: Nic, devid: int, domid: int) -> NetSpec:
    return NetSpec(
        specification=nic.channel.specification.value,
        devid=devid,
        ifname=f"eth{nic.index}",
        mac=nic.mac or derived_mac(cfg.name, nic.index),
        ip=with_prefix(nic.ips[0]) if nic.ips else "",
        bridge=nic.bridge or "xenbr0",
        mtu=nic.mtu or 1500,
        transport=nic.channel.transport.value,
        backend_domid=domid,
        grant_usage=nic.channel.grant_usage,
    )


def _virtio_spec(dev: VirtioDevice, unit: int, devid: int, domid: int) -> DeviceSpec:
    cls = ConsoleSpec if dev.kind == "console" else RngSpec
    return cls(devid=devid, unit=unit, transport=dev.channel.transport.value,
               backend_domid=domid, grant_usage=dev.channel.grant_usage)  # fmt: skip


class _Builder:
    """Specs in file order, devids counted per transport, each error at its line."""

    def __init__(self, cfg: DomainConfig, resolve_domid: DomidResolver) -> None:
        self.cfg, self.resolve = cfg, resolve_domid
        self.devids: Counter[str] = Counter()
        self.units: Counter[str] = Counter()
        self.specs: list[DeviceSpec] = []
        self.lines: list[tuple[int, str]] = []

    def add(self, key: str, line: int, where: str, transport: str, backend: str,
            make: Callable[[int, int], DeviceSpec]) -> None:  # fmt: skip
        try:
            spec = check_spec(make(self.devids[transport], self.resolve(backend)), where)
        except (SpecError, LookupError, ValueError) as exc:
            raise ConfigError(self.cfg.source, line, key, str(exc)) from None
        self.devids[transport] += 1
        self.specs.append(spec)
        self.lines.append((line, key))


def runtime_specs(
    cfg: DomainConfig, resolve_domid: DomidResolver = numeric_domid
) -> RuntimeDevices:
    """Every device the runtime can run as a checked spec; the rest named in ``pending``
    (none today: every kind of device a config can name has a spec)."""
    b = _Builder(cfg, resolve_domid)
    pending: list[str] = []
    for disk in cfg.disks:
        classic = disk.channel.specification is Specification.XEN
        b.add("disk", disk.line, f"disk {disk.vdev}",
              "vbd" if classic else disk.channel.transport.value,
              disk.channel.backend, partial(_disk_spec, disk))  # fmt: skip
    for nic in cfg.nics:
        classic = nic.channel.specification is Specification.XEN
        b.add("vif", nic.line, f"vif {nic.index}",
              "xenbus" if classic else nic.channel.transport.value,
              nic.channel.backend, partial(_net_spec, cfg, nic))  # fmt: skip
    for dev in cfg.virtio:
        unit = b.units[dev.kind]
        b.units[dev.kind] += 1
        b.add("virtio", dev.line, dev.kind, dev.channel.transport.value, dev.channel.backend,
              partial(_virtio_spec, dev, unit))  # fmt: skip
    try:
        check_domain_devices(b.specs)
    except SpecError as exc:  # exc.where is "devices[N]...": blame entry N's line
        n = int(exc.where.split("[", 1)[1].split("]", 1)[0])
        line, key = b.lines[n]
        raise ConfigError(cfg.source, line, key, str(exc)) from None
    return RuntimeDevices(tuple(b.specs), tuple(pending))
