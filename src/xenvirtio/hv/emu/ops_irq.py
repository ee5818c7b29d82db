"""Daemon operations: interrupts. The device model raises them (dm_op ``inject_msi``,
``set_irq_level``, ``set_pci_intx_level``); the guest takes pirqs, binds them to event
channels and reads its virtual interrupt controller.

As Xen's ``hvm_inject_msi`` does, an MSI with vector 0 names a pirq: the event channel
bound to it is raised (nothing bound: the event is dropped, as ``send_guest_pirq``
drops it). A GSI the guest mapped to a pirq raises that pirq's channel when its level
rises (``assert_gsi`` with ``hvm_domain_use_pirq``). Everything else (vector MSIs,
lines nobody mapped) goes to the virtual interrupt controller's queue.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Hashable

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.guest import IrqEvent
from xenvirtio.hv.emu.domains import Domain
from xenvirtio.hv.emu.ops_evtchn import bound_reply
from xenvirtio.hv.emu.ops_mem import require_privileged
from xenvirtio.hv.emu.protocol import Reply, Request
from xenvirtio.hv.emu.state import ConnState, HvState
from xenvirtio.spec.msi import hvm_pci_intx_gsi, msi_pirq, msi_vector

Handler = Callable[[HvState, ConnState, Request], Reply | None]


def _queue(hv: HvState, target: Domain, event: IrqEvent) -> Reply:
    target.irqs.append(event)
    if target.irq_efd is not None:
        hv.efd.signal(target.irq_efd)
    return Reply(value=None)


def inject_msi(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "interrupt injection")
    domid, addr, data = req.args["domid"], req.args["addr"], req.args["data"]
    target = hv.domain(domid)
    if msi_vector(data):  # an ordinary LAPIC MSI
        return _queue(hv, target, IrqEvent("msi", addr=addr, data=data))
    pirq = msi_pirq(addr, data)
    if pirq is None:
        raise HypervisorError(errno.ERANGE, "MSI with vector 0 names no pirq")
    if not target.pirqs.msi_pirq_ok(pirq):
        raise HypervisorError(errno.EINVAL, f"pirq {pirq} cannot be an MSI of domain {domid}")
    hv.channels.raise_pirq(domid, pirq)
    return Reply(value=None)


def _line(hv: HvState, target: Domain, source: Hashable, gsi: int, event: IrqEvent) -> Reply:
    pirq = target.pirqs.gsi_pirq.get(gsi)
    if pirq is None:
        return _queue(hv, target, event)
    if target.pirqs.set_level(source, gsi, event.level):
        hv.channels.raise_pirq(target.domid, pirq)
    return Reply(value=None)


def set_irq_level(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "interrupt injection")
    kind, irq = req.args["kind"], req.args["irq"]
    if kind not in ("irq", "isa_irq"):
        raise HypervisorError(errno.EINVAL, "bad interrupt kind")
    target = hv.domain(req.args["domid"])
    event = IrqEvent(kind, line=irq, level=req.args["level"])
    if kind == "isa_irq":  # ISA IRQs are not routed to pirqs here
        return _queue(hv, target, event)
    return _line(hv, target, ("gsi", irq), irq, event)


def set_pci_intx_level(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "interrupt injection")
    sbdf, intx = req.args["sbdf"], req.args["intx"]
    if intx > 3:
        raise HypervisorError(errno.EINVAL, "intx is 0..3 (INTA..INTD)")
    target = hv.domain(req.args["domid"])
    event = IrqEvent("intx", sbdf=sbdf, line=intx, level=req.args["level"])
    gsi = hvm_pci_intx_gsi((sbdf >> 3) & 0x1F, intx)
    return _line(hv, target, ("intx", sbdf, intx), gsi, event)


def irq_attach(hv: HvState, conn: ConnState, req: Request) -> Reply:
    domain = hv.domain(conn.domid)
    if domain.irq_efd is None:
        raise HypervisorError(errno.ENODEV, "domain 0 has no virtual interrupt controller")
    return Reply(value=None, fds=(domain.irq_efd,))


def irq_take(hv: HvState, conn: ConnState, req: Request) -> Reply:
    domain = hv.domain(conn.domid)
    events = [vars(e) for e in domain.irqs]
    domain.irqs.clear()
    return Reply(value={"events": events})


def _hvm(hv: HvState, conn: ConnState) -> Domain:
    domain = hv.domain(conn.domid)
    if domain.type != "hvm":
        raise HypervisorError(errno.EINVAL, "pirqs are for HVM guests here")
    return domain


def get_free_pirq(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """``PHYSDEVOP_get_free_pirq`` (MAP_PIRQ_TYPE_MSI)."""
    return Reply(value={"pirq": _hvm(hv, conn).pirqs.get_free_pirq()})


def map_pirq_gsi(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """``PHYSDEVOP_map_pirq`` (MAP_PIRQ_TYPE_GSI, DOMID_SELF)."""
    return Reply(value={"pirq": _hvm(hv, conn).pirqs.map_gsi(req.args["gsi"])})


def unmap_pirq(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """``PHYSDEVOP_unmap_pirq``: EBUSY while an event channel is bound to it."""
    pirq = req.args["pirq"]
    if pirq in hv.channels.table(conn.domid).pirqs:
        raise HypervisorError(errno.EBUSY, f"pirq {pirq} is bound to an event channel")
    _hvm(hv, conn).pirqs.unmap(pirq)
    return Reply(value=None)


def bind_pirq(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """``EVTCHNOP_bind_pirq``: the pirq must be one the domain took or mapped."""
    pirq = req.args["pirq"]
    if pirq not in _hvm(hv, conn).pirqs.mapped:
        raise HypervisorError(errno.EINVAL, f"pirq {pirq} is not mapped")
    return bound_reply(hv, conn, hv.channels.bind_pirq(conn.domid, pirq, conn.id))


HANDLERS: dict[str, Handler] = {
    "dm.inject_msi": inject_msi,
    "dm.set_irq_level": set_irq_level,
    "dm.set_pci_intx_level": set_pci_intx_level,
    "irq.attach": irq_attach,
    "irq.take": irq_take,
    "irq.get_free_pirq": get_free_pirq,
    "irq.map_pirq_gsi": map_pirq_gsi,
    "irq.unmap_pirq": unmap_pirq,
    "evtchn.bind_pirq": bind_pirq,
}
