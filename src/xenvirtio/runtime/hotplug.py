"""Devices added to and removed from a running domain (hot-plug), over XenBus.

    endpoint = attach_device(hv, domid, run_dir, DiskSpec(devid=1, vdev="xvdb", ...))
    detach_device(hv, domid, run_dir, "xvdb")

Attach: a NIC first gets its namespaces and bridge (`network.prepare_hotplug`); the
spec joins ``devices.json``, its XenBus directories are plugged with the spec
announced in the frontend directory (`layout.HOTPLUG_SPEC_KEY`), the backend process is
told to read its specs again (SIGHUP; it answers in ``backend.status``), and the guest
kernel, which watches ``device/virtio``, brings the device up and reports it ready.

Detach, as ``xl block-detach``: the backend directory goes ``online`` = 0; the guest
closes its export and driver and leaves the device (Closed), the backend, offline,
lets go; then the spec leaves ``devices.json``, the backend drops the device model and
both directories are removed.

Only XenBus devices come and go: a pci or mmio device would need a hot-plug
controller (PCIe native hot-plug, or a new virtio-mmio window announced to the guest),
which neither the device model nor the guest kernel has; they are refused.
Any failure of an attach undoes it. One toolstack command at a time per domain.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.xenbus.ops import read_optional
from xenvirtio.runtime.devices import plug, unplug, xenbus_place
from xenvirtio.runtime.domain import DeviceEndpoint, inspect
from xenvirtio.runtime.layout import DomainDir, endpoint_dir
from xenvirtio.runtime.network import prepare_hotplug
from xenvirtio.runtime.specs import (
    DeviceSpec,
    NetSpec,
    check_domain_devices,
    check_spec,
    specs_from_json,
    specs_to_json,
)
from xenvirtio.runtime.supervisor import find_backend

HOTPLUG_TIMEOUT = 30.0
NOT_HOTPLUGGABLE = (
    "{transport} devices cannot be added to or removed from a running domain (no "
    "hot-plug controller for them); use transport=xenbus, or recreate the domain"
)


class HotplugError(RuntimeError):
    """A device could not be added or removed; an attach that fails leaves nothing."""


def read_specs(domain: DomainDir) -> list[DeviceSpec]:
    """The domain's device specs as the runtime recorded them (none if no record)."""
    try:
        return specs_from_json(json.loads(domain.spec_file.read_text()))
    except FileNotFoundError:
        return []


def next_devid(specs: list[DeviceSpec], transport: str) -> int:
    """The lowest devid no device of ``transport`` uses."""
    used = {s.devid for s in specs if s.transport == transport}
    return next(n for n in range(len(used) + 1) if n not in used)


def attach_device(hv: Hypervisor, domid: int, run_dir: Path, spec: DeviceSpec,
                  timeout: float = HOTPLUG_TIMEOUT) -> DeviceEndpoint:  # fmt: skip
    """Add ``spec`` to running domain ``domid`` and wait until the guest serves it."""
    domain = DomainDir(run_dir, domid)
    specs = read_specs(domain)
    check_spec(spec, spec.name)
    if spec.transport != "xenbus":
        raise HotplugError(NOT_HOTPLUGGABLE.format(transport=spec.transport))
    check_domain_devices([*specs, spec])
    if isinstance(spec, NetSpec):  # before the backend opens its TAP on the bridge
        prepare_hotplug(run_dir, domid, spec)
    _write_specs(domain, [*specs, spec])
    try:
        plug(hv, domid, spec, announce=True)
        _reload_backend(domain, spec.name, present=True, timeout=timeout)
        return _wait_endpoint(hv, domid, run_dir, spec.name, timeout)
    except BaseException:
        _remove(hv, domain, specs, spec, timeout=min(timeout, 5.0))
        raise


def detach_device(hv: Hypervisor, domid: int, run_dir: Path, name: str,
                  timeout: float = HOTPLUG_TIMEOUT) -> None:  # fmt: skip
    """Remove device ``name`` from running domain ``domid`` (see the module docstring)."""
    domain = DomainDir(run_dir, domid)
    specs = read_specs(domain)
    found = [s for s in specs if s.name == name]
    if not found:
        raise HotplugError(f"domain {domid} has no device {name!r}")
    spec = found[0]
    if spec.transport != "xenbus":
        raise HotplugError(NOT_HOTPLUGGABLE.format(transport=spec.transport))
    _remove(hv, domain, [s for s in specs if s.name != name], spec, timeout)


def _remove(hv: Hypervisor, domain: DomainDir, rest: list[DeviceSpec], spec: DeviceSpec,
            timeout: float) -> None:  # fmt: skip
    """Guest first (it closes in order), then the backend, then the nodes and files."""
    _, be = xenbus_place(domain.domid, spec)
    store = hv.store
    if store is not None and store.exists(str(be)):
        store.write(f"{be}/online", "0")
        base = endpoint_dir(domain.domid, spec.name)

        def let_go() -> bool:  # closed it, or never had it working
            with contextlib.suppress(OSError):
                return read_optional(store, f"{base}/state") in (None, b"failed")
            return True

        _wait(let_go, timeout)  # a dead guest: go on anyway
        with contextlib.suppress(OSError):
            store.rm(base)
    _write_specs(domain, rest)
    with contextlib.suppress(HotplugError):
        _reload_backend(domain, spec.name, present=False, timeout=timeout)
    unplug(hv, domain.domid, spec)
    with contextlib.suppress(FileNotFoundError):
        domain.nbd_socket(spec.name).unlink()


def _write_specs(domain: DomainDir, specs: list[DeviceSpec]) -> None:
    tmp = domain.spec_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(specs_to_json(specs), indent=1))
    os.replace(tmp, domain.spec_file)


def _status(domain: DomainDir) -> dict[str, object]:
    try:
        data = json.loads(domain.backend_status.read_text())
    except (OSError, ValueError):
        return {"generation": 0, "serving": [], "failed": {}}
    return data if isinstance(data, dict) else {}


def _reload_backend(domain: DomainDir, name: str, *, present: bool, timeout: float) -> None:
    """SIGHUP the backend; wait until its status shows ``name`` served (or gone)."""
    backend = find_backend(domain)
    if backend is None or not backend.alive():
        raise HotplugError(f"domain {domain.domid}: its backend process is not running")
    before = _status(domain).get("generation", 0)
    os.kill(backend.pid, signal.SIGHUP)
    if not _wait(lambda: _status(domain).get("generation", 0) != before, timeout):
        raise HotplugError(f"the backend did not take the change in {timeout:.0f} s")
    status = _status(domain)
    failed = status.get("failed")
    if isinstance(failed, dict) and name in failed:
        raise HotplugError(f"backend: {failed[name]}")
    serving = status.get("serving")
    if isinstance(serving, list) and (name in serving) != present:
        raise HotplugError(f"backend: {name} {'not ' if present else 'still '}served")


def _wait_endpoint(hv: Hypervisor, domid: int, run_dir: Path, name: str,
                   timeout: float) -> DeviceEndpoint:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        endpoint = inspect(hv, domid, run_dir).endpoint(name)
        if endpoint.state == "ready":
            return endpoint
        if endpoint.state == "failed":
            raise HotplugError(f"{name}: the guest failed it: {endpoint.error}")
        if time.monotonic() > deadline:
            raise HotplugError(f"{name}: not ready in the guest after {timeout:.0f} s")
        time.sleep(0.05)


def _wait(ready: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
