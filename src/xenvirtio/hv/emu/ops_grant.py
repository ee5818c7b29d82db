"""Daemon operations: grant mapping (gntdev), grant copy, sharing (gntalloc) and the
domain's own grant table (allocating refs, ending access)."""

from __future__ import annotations

import errno
from collections.abc import Callable

from xenvirtio.hv.api.errors import GrantError, HypervisorError
from xenvirtio.hv.emu.domains import Domain
from xenvirtio.hv.emu.protocol import MAX_LIST, Reply, Request
from xenvirtio.hv.emu.state import ConnState, GrantMapRecord, HvState, ShareRecord
from xenvirtio.spec.event_channel import DOMID_FIRST_RESERVED, EVTCHNSTAT_closed
from xenvirtio.spec.grant_table import (
    XEN_PAGE_SIZE,
    GNTST_bad_copy_arg,
    GNTST_bad_domain,
    GNTST_okay,
    GTF_permit_access,
    GTF_readonly,
)

Handler = Callable[[HvState, ConnState, Request], Reply | None]
_PAGE = XEN_PAGE_SIZE


def _check_notify(hv: HvState, conn: ConnState, req: Request, nr_pages: int) -> None:
    offset, port = req.args["notify_offset"], req.args["notify_port"]
    if offset is not None and offset >= nr_pages * _PAGE:
        raise HypervisorError(errno.EINVAL, "unmap notify offset is outside the pages")
    if port is not None and hv.channels.status(conn.domid, port)[0] == EVTCHNSTAT_closed:
        raise HypervisorError(errno.EINVAL, f"unmap notify port {port} is not bound")


def gnttab_map(hv: HvState, conn: ConnState, req: Request) -> Reply:
    refs: list[int] = req.args["refs"]
    writable: bool = req.args["writable"]
    if not refs:
        raise HypervisorError(errno.EINVAL, "no grant references")
    if conn.max_grants is not None and conn.mapped_grants + len(refs) > conn.max_grants:
        raise HypervisorError(errno.ENOMEM, "more grants than set_max_grants allows")
    _check_notify(hv, conn, req, len(refs))
    try:
        granter = hv.domain(req.args["domid"])
    except HypervisorError as exc:
        raise GrantError(errno.ESRCH, str(exc.strerror), GNTST_bad_domain) from None
    table = granter.table()
    # Validate every ref before pinning any: all or nothing.
    frames = [table.check_access(ref, conn.domid, writable) for ref in refs]
    for ref in refs:
        table.pin(ref, writable)
    handle = hv.next_id()
    conn.maps[handle] = GrantMapRecord(
        granter, list(refs), frames, writable, req.args["notify_offset"], req.args["notify_port"]
    )
    conn.mapped_grants += len(refs)
    offsets = [frame * _PAGE for frame in frames]
    return Reply(value={"handle": handle, "offsets": offsets}, fds=(granter.ram_fd,))


def gnttab_unmap(hv: HvState, conn: ConnState, req: Request) -> Reply:
    hv.unmap_grant(conn, req.args["handle"])
    return Reply(value=None)


def _copy_side(
    hv: HvState, conn: ConnState, domid: int, ref: int, offset: int, length: int, write: bool
) -> tuple[Domain, int]:
    """(granter, byte offset in its RAM) of one grant side of a copy; GrantError if not."""
    if offset + length > _PAGE:
        raise GrantError(errno.EINVAL, "copy crosses a page", GNTST_bad_copy_arg)
    try:
        granter = hv.domain(domid)
    except HypervisorError:
        raise GrantError(errno.ESRCH, f"no domain {domid}", GNTST_bad_domain) from None
    frame = granter.table().check_access(ref, conn.domid, write)
    return granter, frame * _PAGE + offset


def gnttab_copy(hv: HvState, conn: ConnState, req: Request) -> Reply:
    statuses: list[int] = []
    out = bytearray()
    for seg in req.args["segments"]:
        src_gref, src_dom, src_ref, src_off, dst_gref, dst_dom, dst_ref, dst_off, length = seg
        if not (src_gref or dst_gref) or length > _PAGE:
            raise HypervisorError(errno.EINVAL, "a copy segment needs a grant side and len <= page")
        if not src_gref and src_ref + length > len(req.blob):
            raise HypervisorError(errno.EINVAL, "local source runs past the data sent")
        status = GNTST_okay
        data = b""
        try:
            if src_gref:
                granter, at = _copy_side(hv, conn, src_dom, src_ref, src_off, length, False)
                data = granter.memory()[at : at + length]
            else:
                data = req.blob[src_ref : src_ref + length]
            if dst_gref:
                granter, at = _copy_side(hv, conn, dst_dom, dst_ref, dst_off, length, True)
                granter.memory()[at : at + length] = data
        except GrantError as exc:
            status = exc.status
        statuses.append(status)
        if not dst_gref:
            out += data if status == GNTST_okay else bytes(length)
    return Reply(value={"status": statuses}, blob=bytes(out))


def set_max_grants(hv: HvState, conn: ConnState, req: Request) -> Reply:
    conn.max_grants = req.args["nr_grants"]
    return Reply(value=None)


def gntshr_share(hv: HvState, conn: ConnState, req: Request) -> Reply:
    count, grantee, writable = req.args["count"], req.args["domid"], req.args["writable"]
    if not 0 < count <= MAX_LIST or grantee >= DOMID_FIRST_RESERVED:
        raise HypervisorError(errno.EINVAL, "bad page count or domain")
    _check_notify(hv, conn, req, count)
    owner = hv.domain(conn.domid)
    frames = owner.allocator().alloc(count)
    try:
        refs = owner.table().alloc_refs(count)
    except GrantError:
        owner.allocator().free(frames)
        raise
    flags = GTF_permit_access | (0 if writable else GTF_readonly)
    for ref, frame in zip(refs, frames, strict=True):
        owner.table().write_entry(ref, flags, grantee, frame)
    handle = hv.next_id()
    conn.shares[handle] = ShareRecord(
        owner, grantee, refs, frames, writable, req.args["notify_offset"], req.args["notify_port"]
    )
    offsets = [frame * _PAGE for frame in frames]
    return Reply(value={"handle": handle, "refs": refs, "offsets": offsets}, fds=(owner.ram_fd,))


def gntshr_unshare(hv: HvState, conn: ConnState, req: Request) -> Reply:
    hv.unshare(conn, req.args["handle"])
    return Reply(value=None)


def alloc_refs(hv: HvState, conn: ConnState, req: Request) -> Reply:
    count = req.args["count"]
    if not 0 < count <= MAX_LIST:
        raise HypervisorError(errno.EINVAL, "bad reference count")
    refs = hv.domain(conn.domid).table().alloc_refs(count)
    conn.refs.update(refs)
    return Reply(value={"refs": refs})


def free_refs(hv: HvState, conn: ConnState, req: Request) -> Reply:
    refs: list[int] = req.args["refs"]
    table = hv.domain(conn.domid).table()
    if not set(refs) <= conn.refs or len(set(refs)) != len(refs):
        raise HypervisorError(errno.EINVAL, "freeing references this handle did not allocate")
    if any(table.in_use(ref) for ref in refs):
        raise HypervisorError(errno.EBUSY, "a reference is still mapped")
    for ref in refs:
        table.write_entry(ref, 0, 0, 0)
    conn.refs.difference_update(refs)
    table.free_refs(refs)
    return Reply(value=None)


def end_access(hv: HvState, conn: ConnState, req: Request) -> Reply:
    hv.domain(conn.domid).table().end_access(req.args["ref"])
    return Reply(value=None)


def grant_table(hv: HvState, conn: ConnState, req: Request) -> Reply:
    domain = hv.domain(conn.domid)
    return Reply(value={"nr_entries": domain.table().nr_entries}, fds=(domain.gnttab_fd,))


HANDLERS: dict[str, Handler] = {
    "gnttab.map": gnttab_map,
    "gnttab.unmap": gnttab_unmap,
    "gnttab.copy": gnttab_copy,
    "gnttab.set_max_grants": set_max_grants,
    "gntshr.share": gntshr_share,
    "gntshr.unshare": gntshr_unshare,
    "grant.alloc_refs": alloc_refs,
    "grant.free_refs": free_refs,
    "grant.end_access": end_access,
    "grant.table": grant_table,
}
