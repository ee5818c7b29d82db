"""Values shared by the device strings: specification, transport, backend, grant_usage.

Each device string (``disk``, ``vif``, ``virtio`` entries) may ask for a channel; what it
leaves out is filled in per domain by `xenvirtio.toolstack.channel`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from xenvirtio.toolstack.errors import EntryError


class Specification(StrEnum):
    """How the guest sees a device (xl's ``specification=``)."""

    VIRTIO = "virtio"  # a virtio device (virtio 1.2)
    XEN = "xen"  # a classic Xen PV device on a shared ring (blkif.h, netif.h)


class Transport(StrEnum):
    """How a virtio device reaches the guest."""

    XENBUS = "xenbus"  # XenStore handshake, grant refs, event channels
    PCI = "pci"  # virtio-pci served through ioreqs (PV-on-HVM)
    MMIO = "mmio"  # virtio-mmio served through ioreqs


class GuestType(StrEnum):
    PV = "pv"
    HVM = "hvm"


DOM0_NAMES = frozenset({"0", "Domain-0"})
_DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ChannelRequest:
    """What one device string asked for; None means "the domain's default"."""

    specification: Specification | None = None
    transport: Transport | None = None
    backend: str = "0"
    grant_usage: bool | None = None


def is_dom0(backend: str) -> bool:
    return backend in DOM0_NAMES


E = TypeVar("E", bound=StrEnum)


def choice(key: str, value: str, enum: type[E]) -> E:
    """``value`` as a member of ``enum``, else `EntryError` listing the choices."""
    try:
        return enum(value)
    except ValueError:
        names = "|".join(member.value for member in enum)
        raise EntryError(f"{key}={value}: must be one of {names}") from None


def grant_usage(value: str) -> bool:
    """``grant_usage=1|0`` (xl accepts exactly these two)."""
    if value not in ("0", "1"):
        raise EntryError(f"grant_usage={value}: must be 0 or 1")
    return value == "1"


def backend_domain(value: str) -> str:
    """A backend domain: its name or its id (xl's ``backend=``)."""
    if not _DOMAIN_NAME.fullmatch(value):
        raise EntryError(f"backend={value}: not a domain name or id")
    return value


def split_fields(text: str) -> list[str]:
    """Comma-separated fields, each stripped of leading whitespace (xl ignores it)."""
    return [field.lstrip(" \t\n") for field in text.split(",")]


def key_value(field: str) -> tuple[str, str] | None:
    """``key=value`` split at the first ``=``, or None for a bare word."""
    key, sep, value = field.partition("=")
    return (key, value) if sep else None


def update_channel(request: ChannelRequest, key: str, value: str) -> ChannelRequest | None:
    """``request`` with one channel key applied, or None if ``key`` is not one."""
    if key == "specification":
        return replace(request, specification=choice(key, value, Specification))
    if key == "transport":
        return replace(request, transport=choice(key, value, Transport))
    if key == "backend":
        return replace(request, backend=backend_domain(value))
    if key == "grant_usage":
        return replace(request, grant_usage=grant_usage(value))
    return None
