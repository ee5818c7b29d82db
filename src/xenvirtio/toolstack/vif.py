"""xl vif strings (xl-network-configuration(5)), sans I/O.

    parse_vif("mac=00:16:3e:01:02:03,bridge=xenbr0,ip=10.0.0.2/24")
    parse_vif("bridge=xenbr0,specification=xen")        # a classic netfront/netback vif
    parse_vif("")                                       # every default

Each field is ``key=value``. Beyond xl, ``specification=virtio|xen`` and
``transport=xenbus|pci|mmio`` pick how the guest sees the NIC. The guest gets a
virtio-net or a classic PV vif, never an emulated NIC: ``type=ioemu`` and emulated
``model=`` values are refused; ``script=`` and ``rate=`` are noted as ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.options import (
    ChannelRequest,
    Specification,
    key_value,
    split_fields,
    update_channel,
)

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # IFNAMSIZ - 1, no '/', ':' or spaces
_VIRTIO_MODELS = frozenset({"virtio", "virtio-net", "virtio-net-pci"})
MTU_MIN, MTU_MAX = 68, 65535  # RFC 791 minimum; ETH max frame payload with jumbo


@dataclass(frozen=True)
class VifEntry:
    """One parsed vif string, before the domain fills in its defaults."""

    mac: str | None = None
    ips: tuple[str, ...] = ()
    bridge: str | None = None
    vifname: str | None = None
    mtu: int | None = None
    request: ChannelRequest = field(default_factory=ChannelRequest)
    notes: tuple[str, ...] = ()


def parse_mac(value: str) -> str:
    """A unicast MAC of six colon-separated octets, in lower case."""
    if not _MAC.fullmatch(value):
        raise EntryError(f"mac={value}: must be six hex octets separated by ':'")
    if int(value[:2], 16) & 1:
        raise EntryError(f"mac={value}: a multicast address (first octet odd) cannot be a NIC's")
    return value.lower()


def parse_ips(value: str) -> tuple[str, ...]:
    """Space-separated IPv4/IPv6 addresses, each with an optional ``/prefix``."""
    out = []
    for word in value.split():
        try:
            iface = ipaddress.ip_interface(word)
        except ValueError:
            raise EntryError(f"ip={word}: not an IP address (with an optional /prefix)") from None
        out.append(str(iface) if "/" in word else str(iface.ip))
    if not out:
        raise EntryError("ip=: no address given")
    return tuple(out)


def _ifname(key: str, value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise EntryError(f"{key}={value}: not a network interface name (1-15 of A-Za-z0-9_.-)")
    return value


def _mtu(value: str) -> int:
    if not value.isdigit() or not MTU_MIN <= int(value) <= MTU_MAX:
        raise EntryError(f"mtu={value}: must be a number in {MTU_MIN}..{MTU_MAX}")
    return int(value)


@dataclass
class _State:
    fields: dict[str, object] = field(default_factory=dict)
    request: ChannelRequest = field(default_factory=ChannelRequest)
    model: str | None = None
    notes: list[str] = field(default_factory=list)


def parse_vif(text: str) -> VifEntry:
    """One vif string; `EntryError` naming the offending key."""
    state = _State()
    seen: set[str] = set()
    for word in split_fields(text):
        if not word:
            continue
        kv = key_value(word)
        if kv is None:
            raise EntryError(f"{word!r}: expected key=value")
        key, value = kv
        if key in seen:
            raise EntryError(f"{key} respecified")
        seen.add(key)
        _apply(state, key, value)
    return _finish(state)


def _apply(state: _State, key: str, value: str) -> None:
    channel = update_channel(state.request, key, value)
    if channel is not None:
        state.request = channel
    elif key == "mac":
        state.fields["mac"] = parse_mac(value)
    elif key == "ip":
        state.fields["ips"] = parse_ips(value)
    elif key in ("bridge", "vifname"):
        state.fields[key] = _ifname(key, value)
    elif key == "mtu":
        state.fields["mtu"] = _mtu(value)
    elif key == "model":
        state.model = value
    elif key == "type":
        if value == "ioemu":
            raise EntryError("type=ioemu: emulated NICs are not provided; use type=vif")
        if value != "vif":
            raise EntryError(f"type={value}: must be vif")
    elif key in ("script", "rate", "gatewaydev"):
        state.notes.append(f"{key}={value} is ignored")
    else:
        raise EntryError(f"{key}={value}: unknown parameter")


def _finish(state: _State) -> VifEntry:
    model = state.model
    if model is not None and model not in _VIRTIO_MODELS:
        raise EntryError(f"model={model}: emulated NICs are not provided; the NIC is virtio-net")
    if model is not None and state.request.specification is Specification.XEN:
        raise EntryError(f"model={model} conflicts with specification=xen")
    return VifEntry(request=state.request, notes=tuple(state.notes), **state.fields)  # type: ignore[arg-type]
