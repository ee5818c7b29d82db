"""What ``xenvirtio list`` shows: every guest domain, its devices and how to reach them.

The truth, from the hypervisor, the processes and XenStore, not from what was asked:

- a domain's ``state`` is the hypervisor's (``running``, ``paused``, ``shutdown``,
  ``dying``), ``crashed`` when its kernel ended with an error or was killed, and
  ``degraded`` when it runs but its backend process is dead;
- a device's ``state`` is what the guest reported (``starting``, ``ready``,
  ``failed``), ``down`` when the guest or the backend is gone, ``unknown`` when
  XenStore does not answer; ``nbd_socket`` is set only while a disk is ``ready``;
  a NIC has ``netns``, ``ifname``, ``ip`` and ``mac`` (run programs in ``netns`` to use
  it), a console its ``pty`` (`xenvirtio console`), an rng its ``socket`` (write a byte
  count and a newline, read that many bytes) while ``ready``.
- devices the runtime cannot run yet are listed with ``state`` = ``pending``.
"""

from __future__ import annotations

from typing import Any

from xenvirtio.hv.api import DomainInfo, DomainState, HypervisorError
from xenvirtio.runtime.domain import DeviceEndpoint, inspect
from xenvirtio.runtime.hotplug import read_specs
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.specs import DeviceSpec, SpecError
from xenvirtio.runtime.supervisor import find_backend
from xenvirtio.toolstack.lifecycle import Host, guests, read_note


def domain_state(info: DomainInfo, backend_alive: bool, has_devices: bool) -> str:
    if info.state is DomainState.SHUTDOWN and info.exit_code != 0:
        return "crashed"  # an error, or killed (None: it never said SCHEDOP_shutdown)
    if info.state is DomainState.RUNNING and has_devices and not backend_alive:
        return "degraded"
    return info.state.value


def list_domains(host: Host) -> list[dict[str, Any]]:
    """One JSON-ready object per guest domain (see the module docstring)."""
    out = []
    for info in guests(host):
        try:
            out.append(describe_domain(host, info))
        except HypervisorError:
            continue  # destroyed while we looked
    return out


def describe_domain(host: Host, info: DomainInfo) -> dict[str, Any]:
    domain = DomainDir(host.run_dir, info.domid)
    try:
        specs = read_specs(domain)
    except (SpecError, ValueError):
        specs = []
    backend = find_backend(domain)
    alive = backend is not None and backend.alive()
    state = domain_state(info, alive, bool(specs))
    endpoints = _endpoints(host, info.domid)
    devices = [_device(spec, endpoints.get(spec.name), state, alive) for spec in specs]
    devices += [_pending(device) for device in read_note(domain).get("pending", [])]
    return {
        "name": info.name,
        "domid": info.domid,
        "type": info.type,
        "state": state,
        "memory_mb": info.memory_mb,
        "vcpus": info.vcpus,
        "backend": {"pid": backend.pid if backend else None, "alive": alive},
        "xenstore": host.xenstore,
        "devices": devices,
    }


def _endpoints(host: Host, domid: int) -> dict[str, DeviceEndpoint]:
    if not host.xenstore:
        return {}
    try:
        view = inspect(host.hv, domid, host.run_dir)
    except OSError:  # XenStore went away
        host.xenstore = False
        return {}
    return {d.name: d for d in view.devices}


def _device(spec: DeviceSpec, endpoint: DeviceEndpoint | None, domain_state: str,
            backend_alive: bool) -> dict[str, Any]:  # fmt: skip
    state: str = endpoint.state if endpoint is not None else "unknown"
    error = endpoint.error if endpoint is not None else "xenstored is not reachable"
    if domain_state not in ("running", "paused", "degraded"):
        state, error = "down", f"the domain is {domain_state}"
    elif not backend_alive:
        state, error = "down", "its backend process is dead"
    nbd = endpoint.nbd if endpoint is not None and state == "ready" else None
    out = {
        "name": spec.name,
        "kind": spec.kind,
        "specification": "xen" if spec.xen_devtype else "virtio",
        "transport": spec.transport,
        "devid": spec.devid,
        "state": state,
        "ring": endpoint.ring if endpoint is not None else None,
        "error": error if state != "ready" else None,
        "nbd_socket": str(nbd) if nbd is not None else None,
    }
    if endpoint is not None:
        out.update(_reach(spec.kind, endpoint, state == "ready"))
    return out


def _reach(kind: str, endpoint: DeviceEndpoint, ready: bool) -> dict[str, Any]:
    """How a host program reaches a NIC, a console or an rng."""
    if kind == "net":
        return {"netns": endpoint.netns, "ifname": endpoint.ifname, "ip": endpoint.ip,
                "mac": endpoint.mac}  # fmt: skip
    if kind == "console":
        return {"pty": str(endpoint.pty) if endpoint.pty is not None else None}
    if kind == "rng":
        socket = endpoint.socket if ready else None
        return {"socket": str(socket) if socket is not None else None}
    return {}


def _pending(device: object) -> dict[str, Any]:
    """A device of the config the runtime cannot run yet (from the toolstack's note)."""
    given = device if isinstance(device, dict) else {}
    return {"name": str(given.get("name")), "kind": str(given.get("kind")),
            "specification": given.get("specification"), "transport": given.get("transport"),
            "devid": None, "state": "pending", "ring": None,
            "error": "the runtime cannot run this kind of device yet",
            "nbd_socket": None}  # fmt: skip
