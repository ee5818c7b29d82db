"""Daemon operations: device model ioreq servers (dm_op) and the guest side of ioreqs."""

from __future__ import annotations

import errno
from collections.abc import Callable

from xenvirtio.hv.api.errors import HypervisorError, HypervisorPermissionError
from xenvirtio.hv.emu.ioreq import MAX_NR_IOREQ_SERVERS, IoreqServerState, select_server
from xenvirtio.hv.emu.ops_mem import require_privileged
from xenvirtio.hv.emu.protocol import Reply, Request
from xenvirtio.hv.emu.state import ConnState, HvState
from xenvirtio.spec.ioreq import HVM_IOREQSRV_BUFIOREQ_ATOMIC, HVM_IOREQSRV_BUFIOREQ_OFF

Handler = Callable[[HvState, ConnState, Request], Reply | None]


def _server(hv: HvState, conn: ConnState, domid: int, ident: int) -> IoreqServerState:
    require_privileged(conn, "dm_op")
    hv.domain(domid)
    server = hv.servers.get((domid, ident))
    if server is None:
        raise HypervisorError(errno.ENOENT, f"no ioreq server {ident} for domain {domid}")
    if server.emulator != conn.domid:
        raise HypervisorPermissionError(errno.EPERM, "ioreq server of another device model")
    return server


def create_ioreq_server(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "dm_op")
    domid, bufioreq = req.args["domid"], req.args["handle_bufioreq"]
    target = hv.domain(domid)
    if target.type != "hvm":
        raise HypervisorError(errno.EINVAL, f"domain {domid} is not an HVM guest")
    if bufioreq > HVM_IOREQSRV_BUFIOREQ_ATOMIC:
        raise HypervisorError(errno.EINVAL, "bad handle_bufioreq")
    used = {ident for (target_id, ident) in hv.servers if target_id == domid}
    free = [i for i in range(MAX_NR_IOREQ_SERVERS) if i not in used]
    if not free:
        raise HypervisorError(errno.ENOSPC, "no free ioreq server slot")
    vp_ports = [
        hv.channels.alloc_unbound(domid, conn.domid, owner=None) for _ in range(target.vcpus)
    ]
    server = IoreqServerState(free[0], hv.next_id(), domid, conn.domid, conn.id, bufioreq, vp_ports)
    if bufioreq != HVM_IOREQSRV_BUFIOREQ_OFF:
        server.buf_port = hv.channels.alloc_unbound(domid, conn.domid, owner=None)
    hv.servers[(domid, server.id)] = server
    conn.servers.add((domid, server.id))
    server.make_pages()
    return Reply(value={"id": server.id})


def get_ioreq_server_info(hv: HvState, conn: ConnState, req: Request) -> Reply:
    server = _server(hv, conn, req.args["domid"], req.args["id"])
    return Reply(value={"ioreq_gfn": None, "bufioreq_gfn": None, "bufioreq_port": server.buf_port})


def map_io_range(hv: HvState, conn: ConnState, req: Request) -> Reply:
    server = _server(hv, conn, req.args["domid"], req.args["id"])
    ranges = server.ranges.get(req.args["type"])
    if ranges is None:
        raise HypervisorError(errno.EINVAL, "bad range type")
    if req.args["map"]:
        ranges.add(req.args["start"], req.args["end"])
    else:
        ranges.remove(req.args["start"], req.args["end"])
    return Reply(value=None)


def set_state(hv: HvState, conn: ConnState, req: Request) -> Reply:
    _server(hv, conn, req.args["domid"], req.args["id"]).enabled = req.args["enabled"]
    return Reply(value=None)


def destroy(hv: HvState, conn: ConnState, req: Request) -> Reply:
    server = _server(hv, conn, req.args["domid"], req.args["id"])
    hv.destroy_server((server.target, server.id))
    return Reply(value=None)


def nr_vcpus(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "dm_op")
    return Reply(value={"vcpus": hv.domain(req.args["domid"]).vcpus})


def ioreq_route(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """Which server gets this access of the calling vCPU (Xen's ioreq_server_select)."""
    servers = [s for s in hv.servers.values() if s.target == conn.domid]
    chosen = select_server(servers, req.args["type"], req.args["addr"])
    live = [s.token for s in servers]
    return Reply(value={"token": chosen.token if chosen else None, "live": live})


def ioreq_attach(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """The server's ioreq page and, per vCPU, the eventfds of its vp_eport."""
    for server in hv.servers.values():
        if server.target == conn.domid and server.token == req.args["token"]:
            fds: list[int] = [server.fd]
            for port in server.vp_ports:
                inbound, outbound = hv.channels.fds(conn.domid, port)
                assert outbound is not None
                fds += [inbound, outbound]
            return Reply(value={"vcpus": len(server.vp_ports)}, fds=tuple(fds))
    raise HypervisorError(errno.ENOENT, "no such ioreq server")


HANDLERS: dict[str, Handler] = {
    "dm.create_ioreq_server": create_ioreq_server,
    "dm.get_ioreq_server_info": get_ioreq_server_info,
    "dm.map_io_range": map_io_range,
    "dm.set_ioreq_server_state": set_state,
    "dm.destroy_ioreq_server": destroy,
    "dm.nr_vcpus": nr_vcpus,
    "ioreq.route": ioreq_route,
    "ioreq.attach": ioreq_attach,
}
