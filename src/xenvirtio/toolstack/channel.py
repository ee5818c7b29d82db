"""How a device reaches its guest: defaults and the combinations allowed, sans I/O.

What a device string leaves out comes from the guest type:

- ``specification`` defaults to ``virtio`` (xl's default is ``xen``: this project is
  about virtio; write ``specification=xen`` for a classic PV disk or vif).
- ``transport`` defaults to ``xenbus`` for a PV guest and ``pci`` for an HVM guest.
- ``grant_usage`` defaults to 1 when the backend is not dom0 (as in libxl). With a dom0
  backend it defaults to the transport's way: grants over XenBus, as every Xen PV
  protocol does; guest-physical addresses over pci and mmio, as libxl does.

Allowed combinations:

======================  =====  =====  =====================================================
transport               pv     hvm    why
======================  =====  =====  =====================================================
xenbus                  yes    yes    HVM guests have XenStore too (PV-on-HVM drivers)
pci                     no     yes    a PV guest has no PCI bus and no device model
mmio                    yes    yes    served through ioreqs, like Xen's virtio-mmio on Arm
======================  =====  =====  =====================================================

``specification=xen`` runs over XenBus only, and always with grants (the classic rings
have no other way), so it takes neither ``transport=pci|mmio`` nor ``grant_usage``. A
backend outside dom0 cannot map guest memory without grants: ``grant_usage=0`` with such
a backend is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.toolstack.errors import EntryError
from xenvirtio.toolstack.options import (
    ChannelRequest,
    GuestType,
    Specification,
    Transport,
    is_dom0,
)


@dataclass(frozen=True)
class Channel:
    """A device's resolved channel: every choice made."""

    specification: Specification
    transport: Transport
    backend: str
    grant_usage: bool

    def describe(self) -> str:
        memory = "grants" if self.grant_usage else "guest-physical addresses"
        backend = "dom0" if is_dom0(self.backend) else f"domain {self.backend}"
        return f"{self.specification} over {self.transport}, backend {backend}, {memory}"


def default_transport(guest: GuestType) -> Transport:
    return Transport.XENBUS if guest is GuestType.PV else Transport.PCI


def resolve_channel(request: ChannelRequest, guest: GuestType) -> Channel:
    """The channel ``request`` gets in a ``guest`` domain; `EntryError` if impossible."""
    if request.specification is Specification.XEN:
        return _classic(request)
    transport = request.transport or default_transport(guest)
    if transport is Transport.PCI and guest is GuestType.PV:
        raise EntryError("transport=pci needs type=hvm (a PV guest has no PCI bus)")
    if not is_dom0(request.backend):
        if request.grant_usage is False:
            raise EntryError(
                f"grant_usage=0 with backend={request.backend}: a backend outside dom0 "
                "cannot map guest memory, it needs grants (grant_usage=1)"
            )
        grants = True
    elif request.grant_usage is not None:
        grants = request.grant_usage
    else:
        grants = transport is Transport.XENBUS
    return Channel(Specification.VIRTIO, transport, request.backend, grants)


def _classic(request: ChannelRequest) -> Channel:
    if request.transport not in (None, Transport.XENBUS):
        raise EntryError(
            f"transport={request.transport} with specification=xen: classic PV rings are "
            "set up through XenStore (transport=xenbus)"
        )
    if request.grant_usage is not None:
        raise EntryError("grant_usage applies to specification=virtio only")
    return Channel(Specification.XEN, Transport.XENBUS, request.backend, True)
