"""Daemon operations: domain control (toolstack) and a domain kernel's own life."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Any

from xenvirtio.hv.api.domctl import DomainState
from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.emu.domains import Domain
from xenvirtio.hv.emu.ops_mem import require_privileged
from xenvirtio.hv.emu.protocol import Reply, Request
from xenvirtio.hv.emu.state import ConnState, HvState
from xenvirtio.spec.ioreq import SHARED_IOPAGE_MAX_VCPUS

Handler = Callable[[HvState, ConnState, Request], Reply | None]

MAX_MEMORY_MB = 64 * 1024
MAX_VCPUS = min(64, SHARED_IOPAGE_MAX_VCPUS)
_KERNEL = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
_NAME = re.compile(r"^[\w.@+-]{1,64}$")


def domain_info(domain: Domain) -> dict[str, Any]:
    return {
        "domid": domain.domid,
        "name": domain.name,
        "memory_mb": domain.memory_mb,
        "vcpus": domain.vcpus,
        "type": domain.type,
        "privileged": domain.privileged,
        "state": domain.state.value,
        "exit_code": domain.exit_code,
        "pid": domain.pid,
    }


def create(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "domain creation")
    args = dict(req.args)
    if args["type"] not in ("pv", "hvm"):
        raise HypervisorError(errno.EINVAL, "type is pv or hvm")
    if not 1 <= args["memory_mb"] <= MAX_MEMORY_MB or not 1 <= args["vcpus"] <= MAX_VCPUS:
        raise HypervisorError(errno.EINVAL, "memory_mb or vcpus out of range")
    if args["name"] and not _NAME.match(args["name"]):
        raise HypervisorError(errno.EINVAL, "bad domain name")
    if any(d.name == args["name"] for d in hv.domains.values()):
        raise HypervisorError(errno.EEXIST, f"a domain is already named {args['name']!r}")
    if args["kernel"] is not None and not _KERNEL.match(args["kernel"]):
        raise HypervisorError(errno.EINVAL, "kernel is 'package.module[:function]'")
    domain = hv.create_domain(args)
    value = {"domid": domain.domid, "store_gfn": domain.store_gfn, "store_port": domain.store_port}
    return Reply(value=value)


def destroy(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "domain destruction")
    hv.destroy_domain(req.args["domid"])
    return Reply(value=None)


def pause(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "pause")
    hv.pause(hv.domain(req.args["domid"]))
    return Reply(value=None)


def unpause(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "unpause")
    hv.unpause(hv.domain(req.args["domid"]))
    return Reply(value=None)


def list_domains(hv: HvState, conn: ConnState, req: Request) -> Reply:
    require_privileged(conn, "domain list")
    return Reply(value=[domain_info(d) for d in sorted(hv.domains.values(), key=lambda d: d.domid)])


def info(hv: HvState, conn: ConnState, req: Request) -> Reply:
    domid = req.args["domid"]
    if domid != conn.domid:
        require_privileged(conn, "domain info")
    return Reply(value=domain_info(hv.domain(domid)))


def wait_start(hv: HvState, conn: ConnState, req: Request) -> Reply | None:
    """A kernel's first call: answered when the domain is first unpaused."""
    domain = hv.domain(conn.domid)
    if domain.state is DomainState.PAUSED:
        domain.start_waiters.append(conn.id)
        return None
    return Reply(value=None)


def shutdown(hv: HvState, conn: ConnState, req: Request) -> Reply:
    """SCHEDOP_shutdown: the kernel is about to end with ``code``."""
    hv.domain(conn.domid).exit_code = req.args["code"]
    return Reply(value=None)


HANDLERS: dict[str, Handler] = {
    "domctl.create": create,
    "domctl.destroy": destroy,
    "domctl.pause": pause,
    "domctl.unpause": unpause,
    "domctl.list": list_domains,
    "domctl.info": info,
    "sched.wait_start": wait_start,
    "sched.shutdown": shutdown,
}
