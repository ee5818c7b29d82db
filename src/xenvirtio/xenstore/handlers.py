"""One handler per xs_wire request type: parse the payload as C xenstored does, act,
return the reply payload (docs/misc/xenstore.txt gives the formats).

Handlers raise :class:`XsError` for an error reply; watch events and effects that go
with the reply are queued on the request (``req.before`` / ``req.after``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from xenvirtio.spec.xs_wire import XENSTORE_REL_PATH_MAX
from xenvirtio.xenstore import control as ctl
from xenvirtio.xenstore import ops
from xenvirtio.xenstore.domains import DOMID_FIRST_RESERVED, DOMID_SELF
from xenvirtio.xenstore.effects import IntroduceDomain, Send
from xenvirtio.xenstore.paths import canonicalize, domain_path, is_special, node_path
from xenvirtio.xenstore.perms import format_perms, parse_perms
from xenvirtio.xenstore.transaction import Transaction
from xenvirtio.xenstore.watch import Watch
from xenvirtio.xenstore.wire import XsError

if TYPE_CHECKING:
    from xenvirtio.xenstore.core import Request, XenstoreCore

OK = b"OK\0"
_U32 = 0xFFFF_FFFF
_ATOI = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)")

# -- payload parsing (C get_string / get_strings / onearg / atoi) ---------------------------


def onearg(payload: bytes) -> str:
    """The single argument: the payload must hold exactly one NUL, at its end."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        raise XsError("EINVAL", "expected one NUL-terminated argument")
    return payload[:-1].decode("latin-1")


def strings(payload: bytes) -> list[str]:
    """The NUL-terminated strings of a payload (an unterminated tail is ignored)."""
    return [s.decode("latin-1") for s in payload.split(b"\0")[:-1]]


def atoi(text: str | bytes) -> int:
    """C ``atoi``: leading decimal digits, 0 if none, wrapped to a C int."""
    raw = text.encode("latin-1") if isinstance(text, str) else text
    m = _ATOI.match(raw)
    value = int(m.group(1)) if m else 0
    return ((value + 2**31) % 2**32) - 2**31


def domid_arg(text: str) -> int:
    return atoi(text) & _U32


def _path(core: XenstoreCore, req: Request, raw: str) -> str:
    return node_path(raw, req.conn.domid, core.quota.path_max)


# -- nodes ------------------------------------------------------------------------------


def read(core: XenstoreCore, req: Request) -> bytes:
    path = node_path(onearg(req.packet.payload), req.conn.domid, core.quota.path_max)
    return ops.read(core.view(req), path)


def directory(core: XenstoreCore, req: Request) -> bytes:
    path = _path(core, req, onearg(req.packet.payload))
    names = ops.directory(core.view(req), path)
    return b"".join(n.encode("latin-1") + b"\0" for n in names)


def directory_part(core: XenstoreCore, req: Request) -> bytes:
    payload = req.packet.payload
    if payload.count(b"\0") != 2:
        raise XsError("EINVAL")
    raw, off, _ = payload.split(b"\0")
    path = _path(core, req, raw.decode("latin-1"))
    offset = atoi(off) & _U32
    return ops.directory_part(core.view(req), path, offset)


def get_perms(core: XenstoreCore, req: Request) -> bytes:
    path = _path(core, req, onearg(req.packet.payload))
    perms = ops.get_perms(core.view(req), path)
    return b"".join(p.encode() + b"\0" for p in format_perms(perms))


def write(core: XenstoreCore, req: Request) -> bytes:
    payload = req.packet.payload
    nul = payload.find(b"\0")
    if nul < 0:
        raise XsError("EINVAL")
    path = _path(core, req, payload[:nul].decode("latin-1"))
    value = payload[nul + 1 :]
    core.run(req, lambda c: ops.write(c, path, value))
    return OK


def mkdir(core: XenstoreCore, req: Request) -> bytes:
    path = _path(core, req, onearg(req.packet.payload))
    core.run(req, lambda c: ops.mkdir(c, path))
    return OK


def rm(core: XenstoreCore, req: Request) -> bytes:
    path = _path(core, req, onearg(req.packet.payload))
    core.run(req, lambda c: ops.rm(c, path))
    return OK


def set_perms(core: XenstoreCore, req: Request) -> bytes:
    payload = req.packet.payload
    count = payload.count(b"\0")
    if count < 2:
        raise XsError("EINVAL")
    parts = [p.decode("latin-1") for p in payload.split(b"\0")]
    raw, texts = parts[0], parts[1:count]
    caller = core.caller(req.conn)
    if is_special(raw):
        if not caller.privileged and len(texts) > core.quota.perms_per_node:
            raise XsError("ENOSPC")
        core.domains.set_special_perms(caller, raw, parse_perms(texts))
        return OK
    path = _path(core, req, raw)
    core.run(req, lambda c: ops.set_perms(c, path, texts))
    return OK


# -- watches ----------------------------------------------------------------------------


def _watch_args(req: Request) -> tuple[str, bytes]:
    args = req.packet.payload.split(b"\0")
    if len(args) - 1 != 2:  # exactly two NUL-terminated strings
        raise XsError("EINVAL")
    return args[0].decode("latin-1"), args[1]


def watch(core: XenstoreCore, req: Request) -> bytes:
    raw, token = _watch_args(req)
    conn = req.conn
    home: str | None = None
    if is_special(raw):
        if len(raw) > XENSTORE_REL_PATH_MAX:
            raise XsError("EINVAL")
        path = raw
    else:
        path = _path(core, req, raw)
        home = None if raw.startswith("/") else domain_path(conn.domid)
    privileged = core.caller(conn).privileged
    limit = None if privileged else core.quota.watches_per_domain
    w = Watch(conn.conn_id, conn.domid, path, token, home)
    core.watches.add(w, limit)
    # Fire once straight away (xenstore.txt), after the reply.
    first = w.event(path)
    if first is not None:
        req.after.append(Send(conn.conn_id, first))
    return OK


def unwatch(core: XenstoreCore, req: Request) -> bytes:
    raw, token = _watch_args(req)
    core.watches.remove(req.conn.conn_id, canonicalize(raw, req.conn.domid), token)
    return OK


def reset_watches(core: XenstoreCore, req: Request) -> bytes:
    core.forget_conn(req.conn)
    return OK


# -- transactions -----------------------------------------------------------------------


def transaction_start(core: XenstoreCore, req: Request) -> bytes:
    conn = req.conn
    if req.txn is not None:
        raise XsError("EBUSY", "no nested transactions")
    privileged = core.caller(conn).privileged
    if not privileged and len(conn.transactions) >= core.quota.transactions_per_conn:
        raise XsError("ENOSPC", "transaction quota")
    tx_id = conn.next_tx_id
    while tx_id == 0 or tx_id in conn.transactions:
        tx_id = (tx_id + 1) & _U32
    conn.next_tx_id = (tx_id + 1) & _U32
    limit = None if privileged else core.quota.transaction_nodes
    conn.transactions[tx_id] = Transaction(tx_id, core.store, limit)
    return f"{tx_id}".encode() + b"\0"


def transaction_end(core: XenstoreCore, req: Request) -> bytes:
    arg = onearg(req.packet.payload)
    if arg not in ("T", "F"):
        raise XsError("EINVAL")
    txn = req.txn
    if txn is None:
        raise XsError("ENOENT")
    del req.conn.transactions[txn.tx_id]
    if arg == "T":
        caller = core.caller(req.conn)
        core.store = txn.commit(core.store, caller.domid, caller.privileged, core.quota)
        req.before.extend(core.fire(txn.changes()))
    return OK


# -- domains ----------------------------------------------------------------------------


def introduce(core: XenstoreCore, req: Request) -> bytes:
    args = strings(req.packet.payload)
    if len(args) < 3:
        raise XsError("EINVAL")
    domid, gfn, port = domid_arg(args[0]), atoi(args[1]), atoi(args[2])
    # xenstore.txt: a real domain id, not 0 and not a special DOMID_... value.
    if port <= 0 or domid == 0 or domid >= DOMID_FIRST_RESERVED:
        raise XsError("EINVAL")
    fresh = not core.domains.is_introduced(domid)
    if fresh:
        core.domains.introduced.add(domid)
    else:
        core.reset_domain(domid)
    req.before.append(IntroduceDomain(domid, gfn & 0xFFFF_FFFF_FFFF_FFFF, port))
    if fresh:
        req.before.extend(core.fire_special("@introduceDomain"))
    return OK


def _known_domain(core: XenstoreCore, req: Request) -> int:
    """C ``onearg_domain``: EINVAL for dom0 or garbage, ENOENT if not introduced."""
    domid = domid_arg(onearg(req.packet.payload))
    if domid == 0:
        raise XsError("EINVAL")
    core.domains.require_introduced(domid)
    return domid


def release(core: XenstoreCore, req: Request) -> bytes:
    req.before.extend(core.release(_known_domain(core, req)))
    return OK


def resume(core: XenstoreCore, req: Request) -> bytes:
    core.domains.shut_down.discard(_known_domain(core, req))
    return OK


def set_target(core: XenstoreCore, req: Request) -> bytes:
    args = strings(req.packet.payload)
    if len(args) < 2:
        raise XsError("EINVAL")
    domid, target = domid_arg(args[0]), domid_arg(args[1])
    core.domains.require_introduced(domid)
    core.domains.require_introduced(target)
    core.domains.targets[domid] = target
    return OK


def get_domain_path(core: XenstoreCore, req: Request) -> bytes:
    return domain_path(domid_arg(onearg(req.packet.payload))).encode() + b"\0"


def is_domain_introduced(core: XenstoreCore, req: Request) -> bytes:
    domid = domid_arg(onearg(req.packet.payload))
    known = domid == DOMID_SELF or core.domains.is_introduced(domid)
    return b"T\0" if known else b"F\0"


def control(core: XenstoreCore, req: Request) -> bytes:
    payload = req.packet.payload
    if b"\0" not in payload:
        raise XsError("EINVAL")
    return ctl.run(core, strings(payload))
