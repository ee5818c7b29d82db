"""Daemon operations: event channels (libxenevtchn) and a domain's own hypervisor ports."""

from __future__ import annotations

import errno
from collections.abc import Callable

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.emu.protocol import Reply, Request
from xenvirtio.hv.emu.state import ConnState, HvState

Handler = Callable[[HvState, ConnState, Request], Reply | None]


def bound_reply(hv: HvState, conn: ConnState, port: int) -> Reply:
    inbound, outbound = hv.channels.fds(conn.domid, port)
    fds = (inbound,) if outbound is None else (inbound, outbound)
    return Reply(value={"port": port}, fds=fds)


def bind_unbound_port(hv: HvState, conn: ConnState, req: Request) -> Reply:
    remote = req.args["remote_domid"]
    hv.domain(remote)
    return bound_reply(hv, conn, hv.channels.alloc_unbound(conn.domid, remote, owner=conn.id))


def bind_interdomain(hv: HvState, conn: ConnState, req: Request) -> Reply:
    remote = req.args["remote_domid"]
    hv.domain(remote)
    port = hv.channels.bind_interdomain(conn.domid, remote, req.args["remote_port"], conn.id)
    return bound_reply(hv, conn, port)


def bind_virq(hv: HvState, conn: ConnState, req: Request) -> Reply:
    return bound_reply(hv, conn, hv.channels.bind_virq(conn.domid, req.args["virq"], conn.id))


def unbind(hv: HvState, conn: ConnState, req: Request) -> Reply:
    port = req.args["port"]
    entry = hv.channels.table(conn.domid).ports.get(port)
    if entry is None or entry.owner != conn.id:
        raise HypervisorError(errno.ENOTCONN, f"port {port} is not bound by this handle")
    if hv.kernel_port(conn.domid, port):
        entry.owner = None
    else:
        hv.channels.close(conn.domid, port)
    return Reply(value=None)


def status(hv: HvState, conn: ConnState, req: Request) -> Reply:
    state, remote_domid, remote_port, virq = hv.channels.status(conn.domid, req.args["port"])
    return Reply(
        value={
            "state": state,
            "remote_domid": remote_domid,
            "remote_port": remote_port,
            "virq": virq,
        }
    )


def claim(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """A port the hypervisor or toolstack made for this domain (its XenStore port)."""
    port = req.args["port"]
    entry = hv.channels.table(conn.domid).ports.get(port)
    if entry is None or entry.channel is None or not hv.kernel_port(conn.domid, port):
        raise HypervisorError(errno.EINVAL, f"port {port} is not a port of this domain to claim")
    if entry.owner is not None and entry.owner != conn.id:
        raise HypervisorError(errno.EBUSY, f"port {port} is already claimed")
    entry.owner = conn.id
    return bound_reply(hv, conn, port)


HANDLERS: dict[str, Handler] = {
    "evtchn.bind_unbound_port": bind_unbound_port,
    "evtchn.bind_interdomain": bind_interdomain,
    "evtchn.bind_virq": bind_virq,
    "evtchn.unbind": unbind,
    "evtchn.status": status,
    "evtchn.claim": claim,
}
