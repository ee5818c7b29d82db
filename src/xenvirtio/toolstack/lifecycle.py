"""Domain lifecycle from xl.cfg files: what ``xl create/destroy/shutdown`` do.

    with open_host(run_dir) as host:
        created = create_domain(host, load_domain_config("demo.cfg"), progress=print)
        created.devices          # DeviceEndpoint per running device (a disk's NBD socket)
        created.pending          # devices of the file the runtime cannot run yet, by name
        shutdown(host, "demo")   # control/shutdown = poweroff, wait, then destroy
        destroy(host, "demo")    # at once

Everything rolls back on failure (`runtime.domain.start_domain` undoes what it did). A
domain is named by its name or its domid. The toolstack keeps its own note of each
domain (config file, pending devices) beside the runtime's files, so `list` can show
them from any process; it goes with the domain's directory.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenvirtio.hv.api import DomainInfo, Hypervisor, HypervisorError
from xenvirtio.runtime import open_hypervisor
from xenvirtio.runtime.domain import (
    DeviceEndpoint,
    DomainStartError,
    shutdown_domain,
    start_domain,
    stop_domain,
)
from xenvirtio.runtime.hypervisor import HypervisorKind
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.specs import MAX_DOMID
from xenvirtio.toolstack.channel import Channel, resolve_channel
from xenvirtio.toolstack.domcfg import DomainConfig
from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.options import ChannelRequest, GuestType, Specification, Transport, is_dom0
from xenvirtio.toolstack.runtime_specs import runtime_specs

NOTE_FILE = "toolstack.json"
Progress = Callable[[str], None]


class ToolstackError(RuntimeError):
    """A command could not do what was asked; ``str()`` is the one line to show."""


@dataclass
class Host:
    """dom0's handles on a host, and where the host keeps its files."""

    hv: Hypervisor
    run_dir: Path
    xenstore: bool  # False: xenstored was not reachable (device states are unknown)


@contextmanager
def open_host(run_dir: Path, kind: HypervisorKind = "emu") -> Iterator[Host]:
    """The host in ``run_dir``; without XenStore if its daemon does not answer."""
    try:
        try:
            hv, xenstore = open_hypervisor(kind, run_dir=run_dir), True
        except ConnectionError:
            hv, xenstore = open_hypervisor(kind, run_dir=run_dir, xenstore=False), False
    except NotImplementedError as exc:
        raise ToolstackError(str(exc)) from None
    except (HypervisorError, OSError):
        raise ToolstackError(
            f"no emu host running in {run_dir}: start one with "
            f"`xenvirtio host start --run-dir {run_dir}`"
        ) from None
    try:
        yield Host(hv, run_dir, xenstore and hv.store is not None)
    finally:
        hv.close()


@dataclass(frozen=True)
class CreatedDomain:
    domid: int
    name: str
    devices: list[DeviceEndpoint]
    pending: tuple[str, ...]


def guests(host: Host) -> list[DomainInfo]:
    return sorted((d for d in host.hv.domctl.list() if not d.privileged), key=lambda d: d.domid)


def find_domain(host: Host, ref: str) -> DomainInfo:
    """The guest domain named ``ref`` (a name or a domid)."""
    for info in guests(host):
        if info.name == ref or (ref.isdigit() and int(ref) == info.domid):
            return info
    raise ToolstackError(f"no domain {ref!r} (see `xenvirtio list`)")


def domid_resolver(host: Host) -> Callable[[str], int]:
    """Backend domains named in a config: dom0, a domid, or a running domain's name."""

    def resolve(backend: str) -> int:
        if is_dom0(backend):
            return 0
        if backend.isdigit() and int(backend) <= MAX_DOMID:
            return int(backend)
        for info in host.hv.domctl.list():
            if info.name == backend:
                return info.domid
        raise LookupError(f"backend={backend}: no domain of that name is running")

    return resolve


def hotplug_channel(
    host: Host, guest: GuestType, text: str, request: ChannelRequest, what: str
) -> tuple[Channel, int]:
    """The channel and backend domid of a device string given at run time (``xl
    block-attach``/``network-attach``): XenBus unless it names a transport. Classic
    (``specification=xen``) devices are refused: their hot-plug is not built."""
    try:
        if request.transport is None and request.specification is not Specification.XEN:
            request = dataclasses.replace(request, transport=Transport.XENBUS)
        channel = resolve_channel(request, guest)
    except EntryError as exc:
        raise ToolstackError(f"{text!r}: {exc}") from None
    if channel.specification is Specification.XEN:
        raise ToolstackError(f"{text!r}: classic (specification=xen) {what} are pending")
    try:
        backend = domid_resolver(host)(channel.backend)
    except LookupError as exc:
        raise ToolstackError(str(exc)) from None
    return channel, backend


def create_domain(host: Host, cfg: DomainConfig, progress: Progress = print) -> CreatedDomain:
    """Start the domain ``cfg`` describes; `ToolstackError` (nothing made) on failure.
    Config problems come as `ConfigError` (``FILE:LINE: key: ...``) before anything."""
    devices = runtime_specs(cfg, domid_resolver(host))
    if any(info.name == cfg.name for info in guests(host)):
        raise ToolstackError(f"{cfg.source}: domain {cfg.name!r} already exists")
    progress(f"starting {cfg.name}: {len(devices.specs)} device(s), backend, guest kernel")
    try:
        domain = start_domain(host.hv, cfg.name, cfg.memory, cfg.vcpus, cfg.type.value,
                              list(devices.specs), run_dir=host.run_dir)  # fmt: skip
    except (DomainStartError, ValueError, HypervisorError, OSError) as exc:
        raise ToolstackError(f"{cfg.source}: {exc}".splitlines()[0]) from exc
    try:
        _write_note(DomainDir(host.run_dir, domain.domid), cfg)
        view = domain.inspect()
    except BaseException:
        domain.stop()
        raise
    return CreatedDomain(domain.domid, cfg.name, view.devices, devices.pending)


def pending_devices(cfg: DomainConfig) -> list[dict[str, str]]:
    """The config's devices the runtime has no spec kind for yet (`runtime_specs` leaves
    them out), as ``list --json`` shows them: none since classic PV disks and vifs run
    (blkif, netif); the note keeps the field for kinds to come."""
    del cfg
    return []


def _write_note(domain: DomainDir, cfg: DomainConfig) -> None:
    note = {"config": str(Path(cfg.source).resolve()), "pending": pending_devices(cfg)}
    (domain.path / NOTE_FILE).write_text(json.dumps(note))


def read_note(domain: DomainDir) -> dict[str, Any]:
    """The toolstack's note of a domain (empty if none, or not one we wrote)."""
    try:
        data = json.loads((domain.path / NOTE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def destroy(host: Host, ref: str) -> DomainInfo:
    """Stop the backend, destroy the domain, remove its nodes and files (``xl destroy``)."""
    info = find_domain(host, ref)
    stop_domain(host.hv, info.domid, host.run_dir)
    return info


def shutdown(host: Host, ref: str, timeout: float) -> tuple[DomainInfo, bool]:
    """Ask the guest to power off, wait up to ``timeout`` s, then clean up; the bool says
    whether it shut down by itself (else it was destroyed)."""
    info = find_domain(host, ref)
    if not host.xenstore:
        raise ToolstackError("xenstored is not reachable: use `xenvirtio destroy`")
    return info, shutdown_domain(host.hv, info.domid, host.run_dir, timeout)
