"""The network namespaces of a host's virtio-net NICs, as dom0's network would be.

    backend netns  xvb-<tag>:        the bridges (``NetSpec.bridge``) and, enslaved to
                                     them, each NIC's device-model TAP ``vif<domid>.<n>``
    guest netns    xvg-<tag>-<domid>: the guest driver's TAP (``NetSpec.ifname``) with
                                     the NIC's MAC and address

``<tag>`` is derived from the run directory, so every process of a host (toolstack,
backends, guest kernels) finds the same names and two hosts never meet. The runtime
creates a domain's namespace before the domain starts (or when a NIC is hot-plugged
into a domain that has none) and removes it when the domain is torn down; the backend
namespace lives while some domain of the host has a NIC and goes with the last one (or
at ``host stop``). Creating them needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from pathlib import Path

from xenvirtio.netif.netlink import Netlink, create_netns, netns_exists, remove_netns
from xenvirtio.runtime.specs import DeviceSpec, NetSpec

NETNS_DIR = Path("/run/netns")  # where named namespaces are bind-mounted (ip-netns(8))


def host_tag(run_dir: Path) -> str:
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]


def backend_netns(run_dir: Path) -> str:
    return f"xvb-{host_tag(run_dir)}"


def guest_netns(run_dir: Path, domid: int) -> str:
    return f"xvg-{host_tag(run_dir)}-{domid}"


def backend_tap(domid: int, spec: NetSpec) -> str:
    """The device model's TAP in the backend namespace (at most 15 characters)."""
    where = "" if spec.transport == "xenbus" else spec.transport[0]
    return f"vif{domid}.{where}{spec.devid}"


def nics(specs: list[DeviceSpec]) -> list[NetSpec]:
    return [s for s in specs if isinstance(s, NetSpec)]


def _new_ns(name: str) -> None:
    create_netns(name)
    with Netlink(name) as nl:
        nl.set_link("lo", up=True)


def prepare(run_dir: Path, domid: int, specs: list[DeviceSpec]) -> None:
    """Before a domain with NICs starts: the backend namespace and its bridges (made if
    missing), and the domain's own namespace (fresh)."""
    wanted = nics(specs)
    if not wanted:
        return
    _bridges(run_dir, wanted)
    guest = guest_netns(run_dir, domid)
    remove_netns(guest)  # a stale one of an earlier domain with this id
    _new_ns(guest)


def prepare_hotplug(run_dir: Path, domid: int, spec: NetSpec) -> None:
    """Before ``spec`` joins running domain ``domid``: the backend namespace and the
    NIC's bridge, and the domain's namespace, each made if missing (a domain that
    started without NICs has none; `release` removes it with the domain)."""
    _bridges(run_dir, [spec])
    guest = guest_netns(run_dir, domid)
    if not netns_exists(guest):
        _new_ns(guest)


def has_netns(run_dir: Path, domid: int) -> bool:
    return netns_exists(guest_netns(run_dir, domid))


def _bridges(run_dir: Path, wanted: list[NetSpec]) -> None:
    backend = backend_netns(run_dir)
    if not netns_exists(backend):
        _new_ns(backend)
    with Netlink(backend) as nl:
        for spec in wanted:
            if not nl.exists(spec.bridge):
                nl.add_bridge(spec.bridge, mtu=spec.mtu)
            nl.set_link(spec.bridge, up=True)


def release(run_dir: Path, domid: int, still_used: bool) -> None:
    """After a domain is gone: its namespace; the backend's too unless ``still_used``
    (another domain of the host has a NIC). Missing namespaces are fine."""
    with contextlib.suppress(OSError):
        remove_netns(guest_netns(run_dir, domid))
    if not still_used:
        release_host(run_dir)


def release_host(run_dir: Path) -> list[str]:
    """``host stop`` (its domains are gone): the backend namespace (its bridges and TAPs
    go with it) and every domain namespace left. Returns what was removed."""
    tag = host_tag(run_dir)
    try:
        names = [p.name for p in NETNS_DIR.iterdir()]
    except OSError:
        names = []
    mine = [ns for ns in names if ns == f"xvb-{tag}" or ns.startswith(f"xvg-{tag}-")]
    for name in mine:
        with contextlib.suppress(OSError):
            remove_netns(name)
    return mine


def add_bridge_peer(run_dir: Path, bridge: str, netns: str, address: str) -> None:
    """A namespace ``netns`` whose ``eth0`` sits on the host's ``bridge`` with
    ``address`` (with its prefix): what dom0's own address on xenbr0 is, for programs
    that talk to the guests' NICs. Removing ``netns`` removes the link from the bridge."""
    iface = ipaddress.ip_interface(address)
    _new_ns(netns)
    try:
        with Netlink(backend_netns(run_dir)) as nl:
            peer = f"vp{hashlib.sha256(netns.encode()).hexdigest()[:8]}"
            nl.add_veth(peer, "eth0", peer_netns=netns)
            nl.set_link(peer, master=bridge, up=True)
        with Netlink(netns) as nl:
            nl.set_link("eth0", up=True)
            nl.add_address("eth0", str(iface.ip), iface.network.prefixlen)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_netns(netns)
        raise
