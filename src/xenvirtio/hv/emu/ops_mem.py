"""Daemon operations: a domain's own memory and foreign mappings (privcmd)."""

from __future__ import annotations

import errno
from collections.abc import Callable

from xenvirtio.hv.api.errors import HypervisorError, HypervisorPermissionError
from xenvirtio.hv.emu.ioreq import IOREQ_PAGES
from xenvirtio.hv.emu.protocol import MAX_LIST, Reply, Request
from xenvirtio.hv.emu.state import ConnState, HvState
from xenvirtio.spec.grant_table import (
    XEN_PAGE_SIZE,
    XENMEM_resource_grant_table,
    XENMEM_resource_ioreq_server,
)
from xenvirtio.spec.ioreq import XENMEM_resource_ioreq_server_frame_bufioreq

Handler = Callable[[HvState, ConnState, Request], Reply | None]


def require_privileged(conn: ConnState, what: str) -> None:
    if not conn.privileged:
        raise HypervisorPermissionError(
            errno.EPERM, f"domain {conn.domid} is not privileged: {what} refused"
        )


def start_info(hv: HvState, conn: ConnState, req: Request) -> Reply:
    domain = hv.domain(conn.domid)
    value = {
        "domid": domain.domid,
        "name": domain.name,
        "type": domain.type,
        "nr_pages": domain.nr_pages,
        "vcpus": domain.vcpus,
        "store_gfn": domain.store_gfn if domain.domid else None,
        "store_evtchn": domain.store_port if domain.domid else None,
        "cmdline": domain.cmdline,
    }
    return Reply(value=value, fds=(domain.ram_fd,))


def alloc_pages(hv: HvState, conn: ConnState, req: Request) -> Reply:
    count = req.args["count"]
    if not 0 < count <= MAX_LIST:
        raise HypervisorError(errno.EINVAL, "bad page count")
    frames = hv.domain(conn.domid).allocator().alloc(count)
    conn.frames.update(frames)
    return Reply(value={"gfns": frames})


def free_pages(hv: HvState, conn: ConnState, req: Request) -> Reply:
    gfns: list[int] = req.args["gfns"]
    if not set(gfns) <= conn.frames or len(set(gfns)) != len(gfns):
        raise HypervisorError(errno.EINVAL, "freeing pages this handle did not allocate")
    domain = hv.domain(conn.domid)
    domain.discard_frames(gfns)
    domain.allocator().free(gfns)
    conn.frames.difference_update(gfns)
    return Reply(value=None)


def decrease_reservation(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """``XENMEM_decrease_reservation``: the frames leave the guest's p2m (here: their
    contents go; they read as zeros afterwards). As Xen's
    ``ioreq_signal_mapcache_invalidate`` does, every *enabled* ioreq server of the domain
    must then drop its mappings: the reply names them, and the calling vCPU sends each
    an ``IOREQ_TYPE_INVALIDATE`` before it goes on (Xen's ``send_invalidate_req``)."""
    domain = hv.domain(conn.domid)
    gfns: list[int] = req.args["gfns"]
    if not gfns or len(set(gfns)) != len(gfns):
        raise HypervisorError(errno.EINVAL, "no frames, or a frame twice")
    if any(gfn >= domain.nr_pages or gfn == domain.store_gfn for gfn in gfns):
        raise HypervisorError(errno.EINVAL, "frame outside the domain's RAM, or its store page")
    domain.discard_frames(gfns)
    servers = sorted(
        (s for s in hv.servers.values() if s.target == domain.domid), key=lambda s: s.id
    )
    return Reply(
        value={
            "servers": [s.token for s in servers if s.enabled],
            "live": [s.token for s in servers],
        }
    )


def foreign_map(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "foreign mapping")
    domain = hv.domain(req.args["domid"])
    frames: list[int] = req.args["frames"]
    if not frames or any(frame >= domain.nr_pages for frame in frames):
        raise HypervisorError(errno.EINVAL, f"frame outside domain {domain.domid}'s memory")
    handle = hv.next_id()
    conn.foreign[handle] = (domain.domid, len(frames))
    offsets = [frame * XEN_PAGE_SIZE for frame in frames]
    return Reply(value={"handle": handle, "offsets": offsets}, fds=(domain.ram_fd,))


def _resource(hv: HvState, req: Request) -> tuple[int, int]:
    """(fd, number of frames) of the resource asked for."""
    domid, kind, ident = req.args["domid"], req.args["type"], req.args["id"]
    domain = hv.domain(domid)
    if kind == XENMEM_resource_grant_table:
        return domain.gnttab_fd, domain.table().nr_entries * 8 // XEN_PAGE_SIZE
    if kind != XENMEM_resource_ioreq_server:
        raise HypervisorError(errno.EOPNOTSUPP, f"resource type {kind} is not supported")
    server = hv.servers.get((domid, ident))
    if server is None:
        raise HypervisorError(errno.ENOENT, f"no ioreq server {ident} for domain {domid}")
    frame = req.args["frame"]
    if frame == XENMEM_resource_ioreq_server_frame_bufioreq and not server.bufioreq:
        raise HypervisorError(errno.EINVAL, "the server has no buffered ioreq page")
    return server.fd, IOREQ_PAGES


def foreign_map_resource(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "resource mapping")
    fd, available = _resource(hv, req)
    frame, count = req.args["frame"], req.args["nr_frames"]
    if count == 0 or frame + count > available:
        raise HypervisorError(errno.EINVAL, "frames outside the resource")
    handle = hv.next_id()
    conn.foreign[handle] = (req.args["domid"], count)
    offsets = [(frame + i) * XEN_PAGE_SIZE for i in range(count)]
    return Reply(value={"handle": handle, "offsets": offsets}, fds=(fd,))


def foreign_unmap(hv: HvState, conn: ConnState, req: Request) -> Reply:
    if conn.foreign.pop(req.args["handle"], None) is None:
        raise HypervisorError(errno.EINVAL, "no such foreign mapping")
    return Reply(value=None)


HANDLERS: dict[str, Handler] = {
    "mem.start_info": start_info,
    "mem.alloc_pages": alloc_pages,
    "mem.free_pages": free_pages,
    "mem.decrease_reservation": decrease_reservation,
    "foreign.map": foreign_map,
    "foreign.map_resource": foreign_map_resource,
    "foreign.unmap": foreign_unmap,
}
