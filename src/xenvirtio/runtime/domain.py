"""Domains with virtio devices: start, inspect, stop. What the toolstack calls.

    domain = start_domain(hv, "guest", memory_mb=64, vcpus=1, type="hvm",
                          devices=[DiskSpec(devid=0, vdev="xvda", image="/srv/a.img")],
                          run_dir=run_dir)
    domain.endpoint("xvda").nbd              # <run-dir>/domains/<id>/xvda.nbd
    domain.stop()

`start_domain` creates the domain paused, plugs its XenBus devices, starts its backend
process (`supervisor`), unpauses it and waits until the guest reports every device
ready. A domain with NICs first gets its network namespaces (`runtime.network`).
Any failure on the way undoes everything it did: backend process, XenStore nodes,
the domain, its network namespaces, its run-directory files. `inspect`, `stop_domain` and
`shutdown_domain` (ask the guest to power off first) work from any process, from what
the run directory and XenStore hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from xenvirtio.hv.api import DomainState, DomainType, Hypervisor, HypervisorError
from xenvirtio.hv.xenbus.ops import read_optional
from xenvirtio.runtime import network
from xenvirtio.runtime.devices import plug, unplug
from xenvirtio.runtime.guest import KERNEL, boot_line
from xenvirtio.runtime.layout import (
    DomainDir,
    EndpointState,
    endpoint_dir,
    parse_count,
    parse_error,
    parse_ring,
    parse_state,
)
from xenvirtio.runtime.specs import (
    DeviceSpec,
    NetSpec,
    check_domain_devices,
    check_spec,
    specs_from_json,
    specs_to_json,
)
from xenvirtio.runtime.supervisor import BackendProcess, find_backend

READY_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 10.0


class DomainStartError(RuntimeError):
    """The domain could not be brought up; nothing of it is left."""


@dataclass(frozen=True)
class DeviceEndpoint:
    """Where a host tool reaches a guest device, and how it is doing."""

    name: str
    kind: str
    transport: str
    state: EndpointState
    nbd: Path | None = None  # a disk's NBD export (a Unix socket)
    ring: str | None = None  # the ring format the driver negotiated
    error: str | None = None
    reconnects: int = 0  # driver resets after its backend restarted
    pty: Path | None = None  # a console's pty (the backend's)
    socket: Path | None = None  # an rng's entropy socket (the guest's)
    netns: str | None = None  # a NIC's guest network namespace ...
    ifname: str | None = None  # ... its interface there,
    ip: str | None = None  # its address
    mac: str | None = None  # and MAC


@dataclass(frozen=True)
class DomainView:
    domid: int
    name: str
    state: DomainState
    devices: list[DeviceEndpoint]
    backend_pid: int | None
    backend_alive: bool

    def endpoint(self, name: str) -> DeviceEndpoint:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)


class RunningDomain:
    """A domain `start_domain` brought up (use as a context manager to stop it)."""

    def __init__(self, hv: Hypervisor, run_dir: Path, domid: int, name: str,
                 specs: list[DeviceSpec], backend: BackendProcess | None) -> None:  # fmt: skip
        self.hv, self.run_dir, self.domid, self.name = hv, run_dir, domid, name
        self.specs, self.backend = specs, backend
        self.dir = DomainDir(run_dir, domid)

    def inspect(self) -> DomainView:
        return inspect(self.hv, self.domid, self.run_dir)

    def endpoint(self, name: str) -> DeviceEndpoint:
        return self.inspect().endpoint(name)

    def restart_backend(self) -> None:
        """Start the backend again with the same specs (after it died or was stopped)."""
        if self.backend is not None:
            self.backend.stop()
        self.backend = BackendProcess.spawn(self.run_dir, self.dir)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> DomainView:
        return wait_ready(self.hv, self.domid, self.run_dir, timeout)

    def stop(self) -> None:
        """Stop the backend, destroy the domain, remove its nodes and files."""
        _teardown(self.hv, self.dir, self.specs, self.backend)
        self.backend = None

    def __enter__(self) -> RunningDomain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_domain(
    hv: Hypervisor,
    name: str,
    memory_mb: int,
    vcpus: int,
    type: DomainType,
    devices: list[DeviceSpec],
    *,
    run_dir: Path,
    kernel: str = KERNEL,
    cmdline: str | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> RunningDomain:
    """Bring a domain up with ``devices`` (see the module docstring). ``kernel`` and
    ``cmdline`` replace the guest kernel (its default command line carries the specs);
    with another kernel nothing waits for the devices to be reported ready."""
    for n, spec in enumerate(devices):
        check_spec(spec, f"devices[{n}]")
    check_domain_devices(devices)
    if type == "pv" and any(s.transport != "xenbus" for s in devices):
        raise ValueError("pci and mmio devices need an hvm domain")
    line = boot_line(run_dir, devices, name) if cmdline is None else cmdline
    domid = hv.domctl.create(memory_mb, vcpus, type, name=name, kernel=kernel, cmdline=line)
    domain = DomainDir(run_dir, domid)
    backend: BackendProcess | None = None
    try:
        domain.path.mkdir(parents=True, mode=0o700, exist_ok=True)
        domain.spec_file.write_text(json.dumps(specs_to_json(devices), indent=1))
        network.prepare(run_dir, domid, devices)
        for spec in devices:
            plug(hv, domid, spec)
        if devices:
            backend = BackendProcess.spawn(run_dir, domain)
        hv.domctl.unpause(domid)
        if kernel == KERNEL:
            wait_ready(hv, domid, run_dir, ready_timeout)
    except BaseException as exc:
        _teardown(hv, domain, devices, backend)
        if isinstance(exc, Exception):
            raise DomainStartError(f"domain {name!r}: {exc}") from exc
        raise
    return RunningDomain(hv, run_dir, domid, name, devices, backend)


def wait_ready(hv: Hypervisor, domid: int, run_dir: Path, timeout: float) -> DomainView:
    """Wait until the guest reported every device ready; raise if one failed, the
    domain ended or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        view = inspect(hv, domid, run_dir)
        failed = [d for d in view.devices if d.state == "failed"]
        if failed:
            raise DomainStartError(f"{failed[0].name}: {failed[0].error}")
        if all(d.state == "ready" for d in view.devices):
            return view
        if view.state is DomainState.SHUTDOWN:
            raise DomainStartError(f"the guest kernel ended ({view.state.value})")
        if not view.backend_alive and view.devices:
            raise DomainStartError("the backend process died")
        if time.monotonic() > deadline:
            raise DomainStartError(f"devices not ready after {timeout} s")
        time.sleep(0.02)


def inspect(hv: Hypervisor, domid: int, run_dir: Path) -> DomainView:
    """What runs for ``domid``: its devices' endpoints and states, its backend process."""
    info = hv.domctl.info(domid)
    domain = DomainDir(run_dir, domid)
    specs = _read_specs(domain)
    backend = find_backend(domain)
    devices = [_endpoint(hv, domain, spec) for spec in specs]
    return DomainView(domid, info.name, info.state, devices,
                      backend.pid if backend else None,
                      backend is not None and backend.alive())  # fmt: skip


def stop_domain(hv: Hypervisor, domid: int, run_dir: Path) -> None:
    """`RunningDomain.stop` for a domain started by another process."""
    domain = DomainDir(run_dir, domid)
    _teardown(hv, domain, _read_specs(domain), find_backend(domain))


def shutdown_domain(hv: Hypervisor, domid: int, run_dir: Path,
                    timeout: float = SHUTDOWN_TIMEOUT) -> bool:  # fmt: skip
    """``xl shutdown``: write ``control/shutdown`` = ``poweroff``, wait up to ``timeout``
    for the guest kernel to close its devices and end, then `stop_domain`. True if the
    guest shut down by itself (False: it did not in time and was destroyed)."""
    if hv.store is not None:
        with contextlib.suppress(OSError):
            hv.store.write(f"/local/domain/{domid}/control/shutdown", "poweroff")
    deadline = time.monotonic() + timeout
    clean = False
    while hv.store is not None and time.monotonic() < deadline:
        try:
            state = hv.domctl.info(domid).state
        except HypervisorError:
            break
        if state is DomainState.SHUTDOWN:
            clean = True
            break
        time.sleep(0.05)
    stop_domain(hv, domid, run_dir)
    return clean


def _read_specs(domain: DomainDir) -> list[DeviceSpec]:
    try:
        text = domain.spec_file.read_text()
    except FileNotFoundError:
        return []
    return specs_from_json(json.loads(text))


def _endpoint(hv: Hypervisor, domain: DomainDir, spec: DeviceSpec) -> DeviceEndpoint:
    base = endpoint_dir(domain.domid, spec.name)
    store = hv.store

    def key(name: str) -> bytes | None:
        return read_optional(store, f"{base}/{name}") if store is not None else None

    state = parse_state(key("state"))
    ready = state == "ready"
    nbd = domain.nbd_socket(spec.name) if spec.kind == "disk" and ready else None
    endpoint = DeviceEndpoint(spec.name, spec.kind, spec.transport, state, nbd,
                              parse_ring(key("ring")), parse_error(key("error")),
                              parse_count(key("reconnects")))  # fmt: skip
    if spec.kind == "console":
        endpoint = dataclasses.replace(endpoint, pty=_published_pty(domain, spec.name))
    elif spec.kind == "rng" and ready:
        endpoint = dataclasses.replace(endpoint, socket=domain.rng_socket(spec.name))
    elif isinstance(spec, NetSpec):
        endpoint = dataclasses.replace(endpoint, netns=network.guest_netns(domain.run_dir,
                                       domain.domid), ifname=spec.ifname,
                                       ip=spec.ip or None, mac=spec.mac)  # fmt: skip
    return endpoint


def _published_pty(domain: DomainDir, name: str) -> Path | None:
    """The pty path the backend wrote (a dom0 file: trusted, but checked for shape)."""
    try:
        text = domain.pty_file(name).read_text()[:256]
    except OSError:
        return None
    return Path(text) if text.startswith("/dev/pts/") and text[9:].isdigit() else None


def _teardown(hv: Hypervisor, domain: DomainDir, specs: list[DeviceSpec],
              backend: BackendProcess | None) -> None:  # fmt: skip
    """Undo a domain, step by step; each step runs even if an earlier one failed."""
    if backend is not None:
        with contextlib.suppress(Exception):
            backend.stop()
    with contextlib.suppress(HypervisorError, OSError):
        hv.domctl.destroy(domain.domid)
    for spec in specs:
        unplug(hv, domain.domid, spec)
    shutil.rmtree(domain.path, ignore_errors=True)
    if network.nics(specs) or network.has_netns(domain.run_dir, domain.domid):  # hot-plugged
        network.release(domain.run_dir, domain.domid, _nics_in_use(domain.run_dir))


def _nics_in_use(run_dir: Path) -> bool:
    """Whether some domain of the host still has a NIC (so keeps the backend netns)."""
    for path in (run_dir / "domains").glob("*/devices.json"):
        try:
            if network.nics(specs_from_json(json.loads(path.read_text()))):
                return True
        except (OSError, ValueError):
            continue
    return False
