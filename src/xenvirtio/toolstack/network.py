"""``xl network-attach`` / ``network-detach``: NICs added to and removed from running domains.

    endpoint = network_attach(host, "demo", "bridge=xenbr0,ip=10.0.0.2/24")
    network_detach(host, "demo", "1")                   # by devid, or by MAC

The vif string is an xl vif string (xl-network-configuration(5), as in a config's
``vif`` list). The NIC is the guest's lowest free ``eth<N>``; without ``mac=`` it gets
the MAC a config's vif N would get (`runtime_specs.derived_mac`). As for disks, a
hot-plugged NIC defaults to ``transport=xenbus`` whatever the guest type (XenBus is the
only transport devices can join or leave a running guest by, `runtime.hotplug`). A
domain that has no NIC yet gets its network namespace at attach (`runtime.network`).
"""

from __future__ import annotations

from xenvirtio.runtime.domain import DeviceEndpoint
from xenvirtio.runtime.hotplug import (
    HotplugError,
    attach_device,
    detach_device,
    next_devid,
    read_specs,
)
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.specs import NetSpec, SpecError
from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.lifecycle import Host, ToolstackError, find_domain, hotplug_channel
from xenvirtio.toolstack.options import GuestType
from xenvirtio.toolstack.runtime_specs import derived_mac, with_prefix
from xenvirtio.toolstack.vif import parse_mac, parse_vif

MAX_NICS = 1000  # eth0..eth999, what a NetSpec's ifname allows


def net_spec(host: Host, domid: int, name: str, guest: GuestType, text: str) -> NetSpec:
    """The runtime spec for vif string ``text`` in domain ``domid`` (named ``name``)."""
    try:
        entry = parse_vif(text)
    except EntryError as exc:
        raise ToolstackError(f"{text!r}: {exc}") from None
    channel, backend = hotplug_channel(host, guest, text, entry.request, "vifs")
    specs = read_specs(DomainDir(host.run_dir, domid))
    names = {s.name for s in specs}
    index = next(n for n in range(MAX_NICS + 1) if f"eth{n}" not in names)
    transport = channel.transport.value
    return NetSpec(devid=next_devid(specs, transport), ifname=f"eth{index}",
                   mac=entry.mac or derived_mac(name, index),
                   ip=with_prefix(entry.ips[0]) if entry.ips else "",
                   bridge=entry.bridge or "xenbr0", mtu=entry.mtu or 1500,
                   transport=transport, backend_domid=backend,  # type: ignore[arg-type]
                   grant_usage=channel.grant_usage)  # fmt: skip


def network_attach(host: Host, ref: str, text: str, timeout: float = 30.0) -> DeviceEndpoint:
    """Add NIC ``text`` to domain ``ref``; returns its endpoint once the guest has it up."""
    info = find_domain(host, ref)
    spec = net_spec(host, info.domid, info.name, GuestType(info.type), text)
    try:
        return attach_device(host.hv, info.domid, host.run_dir, spec, timeout)
    except (HotplugError, SpecError, OSError) as exc:
        raise ToolstackError(f"network-attach {spec.ifname}: {exc}") from exc


def find_nic(host: Host, domid: int, which: str) -> NetSpec:
    """Domain ``domid``'s NIC with devid, MAC or interface name ``which`` (as xl: devid
    or MAC)."""
    nics = [s for s in read_specs(DomainDir(host.run_dir, domid)) if isinstance(s, NetSpec)]
    if which.isdigit():
        # xenbus first: only those detach; another transport's is refused with a reason
        found = sorted((s for s in nics if s.devid == int(which)),
                       key=lambda s: s.transport != "xenbus")  # fmt: skip
    elif ":" in which:
        try:
            mac = parse_mac(which)
        except EntryError as exc:
            raise ToolstackError(str(exc)) from None
        found = [s for s in nics if s.mac == mac]
    else:
        found = [s for s in nics if s.ifname == which]
    if not found:
        raise ToolstackError(f"domain {domid} has no NIC {which!r}")
    return found[0]


def network_detach(host: Host, ref: str, which: str, timeout: float = 30.0) -> NetSpec:
    """Remove NIC ``which`` (devid, MAC or ``eth<N>``) from domain ``ref``."""
    info = find_domain(host, ref)
    spec = find_nic(host, info.domid, which)
    try:
        detach_device(host.hv, info.domid, host.run_dir, spec.name, timeout)
    except (HotplugError, OSError) as exc:
        raise ToolstackError(f"network-detach {spec.ifname}: {exc}") from exc
    return spec
