"""The XenStore daemon's brain, sans-I/O: packets in, effects out.

The I/O side owns connections (unix socket clients, domain rings) and calls, per
connection, ``connect (handle)* disconnect``; every call returns the effects to carry
out, in order. The core never raises on client input: a bad request gets an XS_ERROR
reply; only a message for a connection it does not know gets a :class:`CloseConnection`.

Request handling follows C xenstored's ``process_message``: a table of handlers with
flags (privileged only, transaction id ignored), EACCES for privileged requests from an
unprivileged domain, ENOENT for an unknown transaction id, ENOSYS for a type the daemon
does not serve (including WATCH_EVENT and ERROR sent by a client). Like C xenstored,
watch events caused by a request are queued before its reply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX, XsdSockmsgType
from xenvirtio.xenstore import handlers as h
from xenvirtio.xenstore import ops
from xenvirtio.xenstore.domains import Domains
from xenvirtio.xenstore.effects import (
    CloseConnection,
    Effect,
    IntroduceDomain,
    ReleaseDomain,
    Send,
    send,
)
from xenvirtio.xenstore.perms import Access, Caller, access_for
from xenvirtio.xenstore.quota import Quota
from xenvirtio.xenstore.store import Store
from xenvirtio.xenstore.transaction import Transaction
from xenvirtio.xenstore.watch import WatchRegistry
from xenvirtio.xenstore.wire import Packet, XsError, error_packet, unchecked_packet


@dataclass
class Connection:
    """What the core keeps per connection."""

    conn_id: int
    domid: int
    transactions: dict[int, Transaction] = field(default_factory=dict)
    next_tx_id: int = 1


class Request:
    """One request being handled, and the effects queued around its reply."""

    __slots__ = ("after", "before", "conn", "packet", "txn")

    def __init__(self, conn: Connection, packet: Packet, txn: Transaction | None) -> None:
        self.conn = conn
        self.packet = packet
        self.txn = txn
        self.before: list[Effect] = []
        self.after: list[Effect] = []


Handler = Callable[["XenstoreCore", Request], bytes]
_PRIV = 1  # XS_FLAG_PRIV: privileged callers only
_NOTID = 2  # XS_FLAG_NOTID: the transaction id is ignored


class XenstoreCore:
    """All XenStore state: the tree, connections, transactions, watches, domains."""

    MESSAGES_KEPT = 64

    def __init__(self, quota: Quota | None = None) -> None:
        self.quota = quota if quota is not None else Quota()
        self.store = Store.initial()
        self.domains = Domains()
        self.watches = WatchRegistry()
        self.conns: dict[int, Connection] = {}
        # ``XS_CONTROL print`` text and internal faults, for the I/O side to log.
        self.messages: deque[str] = deque(maxlen=self.MESSAGES_KEPT)
        self.internal_errors = 0

    # -- the I/O side's API ------------------------------------------------------------

    def connect(self, conn_id: int, domid: int = 0) -> None:
        """A new connection; connections of domain 0 (socket clients) are privileged."""
        self.conns[conn_id] = Connection(conn_id, domid)

    def disconnect(self, conn_id: int) -> list[Effect]:
        """Forget a connection: abort its transactions, drop its watches. Idempotent."""
        self.watches.drop(conn_id)
        self.conns.pop(conn_id, None)
        return []

    def domain_of(self, conn_id: int) -> int:
        """The domain behind a connection (KeyError if unknown)."""
        return self.conns[conn_id].domid

    def domain_shutdown(self, domid: int) -> list[Effect]:
        """A domain shut down: fire @releaseDomain once (until XS_RESUME)."""
        if not self.domains.is_introduced(domid) or domid in self.domains.shut_down:
            return []
        self.domains.shut_down.add(domid)
        return self.fire_special("@releaseDomain")

    def domain_destroyed(self, domid: int) -> list[Effect]:
        """A domain died: release it as XS_RELEASE would (no reply)."""
        if domid == 0 or not self.domains.is_introduced(domid):
            return []
        return self.release(domid)

    def handle(self, conn_id: int, packet: Packet) -> list[Effect]:
        """Process one request from ``conn_id``."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return [CloseConnection(conn_id, "unknown connection")]
        try:
            return self._dispatch(conn, packet)
        except XsError as err:
            return [Send(conn_id, error_packet(packet.req_id, packet.tx_id, err.name))]
        except Exception as exc:  # a fault here must not take the daemon down
            self.internal_errors += 1
            self.messages.append(f"internal error on type {packet.type}: {exc!r}")
            return [Send(conn_id, error_packet(packet.req_id, packet.tx_id, "EIO"))]

    # -- dispatch ----------------------------------------------------------------------

    def caller(self, conn: Connection) -> Caller:
        return self.domains.caller(conn.domid)

    def _dispatch(self, conn: Connection, packet: Packet) -> list[Effect]:
        entry = _HANDLERS.get(packet.type)
        if entry is None:
            raise XsError("ENOSYS", f"unknown type {packet.type}")
        handler, flags = entry
        if flags & _PRIV and not self.caller(conn).privileged:
            raise XsError("EACCES")
        txn = None
        if not flags & _NOTID and packet.tx_id != 0:
            txn = conn.transactions.get(packet.tx_id)
            if txn is None:
                raise XsError("ENOENT", "no such transaction")
        req = Request(conn, packet, txn)
        payload = handler(self, req)
        if type(payload) is not bytes:
            raise TypeError(f"handler returned {type(payload).__name__}")
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            raise XsError("E2BIG", "reply too long")
        # The header echoes the request's, which is valid (a Packet always is); the payload
        # is checked above: no need for Packet's own checks.
        reply = send(
            conn.conn_id, unchecked_packet(packet.type, packet.req_id, packet.tx_id, payload)
        )
        if req.before or req.after:
            return [*req.before, reply, *req.after]
        return [reply]

    def view(self, req: Request) -> ops.Ctx:
        """The context of a read-only operation: ``run`` minus the watch firing (reads
        change nothing) and minus the closure."""
        txn = req.txn
        caller = self.domains.caller(req.conn.domid)
        if txn is None:
            return ops.Ctx(self.store, caller, self.quota, ops.Journal())
        return ops.Ctx(txn.refresh(self.store), caller, self.quota, txn.journal)

    def run(self, req: Request, op: Callable[[ops.Ctx], object]) -> object:
        """Run a node operation on the live store or in the request's transaction."""
        txn = req.txn
        if txn is None:
            journal = ops.Journal()
            caller = self.domains.caller(req.conn.domid)
            result = op(ops.Ctx(self.store, caller, self.quota, journal))
            if journal.changes:
                req.before.extend(self.fire(journal.changes))
            return result
        store = txn.refresh(self.store)
        return op(ops.Ctx(store, self.caller(req.conn), self.quota, txn.journal))

    # -- watches -----------------------------------------------------------------------

    def fire(self, changes: list[ops.Change]) -> list[Effect]:
        out: list[Effect] = []
        for change in changes:

            def permitted(conn_id: int, change: ops.Change = change) -> bool:
                who = self.caller(self.conns[conn_id])
                return any(access_for(who, p) & Access.READ for p in change.perms)

            out.extend(
                Send(c, p) for c, p in self.watches.fire(change.path, change.exact, permitted)
            )
        return out

    def fire_special(self, name: str) -> list[Effect]:
        def permitted(conn_id: int) -> bool:
            return self.domains.may_hear_special(self.caller(self.conns[conn_id]), name)

        return [Send(c, p) for c, p in self.watches.fire(name, True, permitted)]

    # -- domains -----------------------------------------------------------------------

    def forget_conn(self, conn: Connection) -> None:
        self.watches.drop(conn.conn_id)
        conn.transactions.clear()

    def reset_domain(self, domid: int) -> None:
        """Re-introduction: the domain's connections lose watches and transactions."""
        for conn in self.conns.values():
            if conn.domid == domid:
                self.forget_conn(conn)

    def release(self, domid: int) -> list[Effect]:
        """C ``destroy_domain``: drop the connections, remove the nodes the domain owns,
        fire @releaseDomain."""
        for conn in [c for c in self.conns.values() if c.domid == domid]:
            self.forget_conn(conn)
            del self.conns[conn.conn_id]
        out: list[Effect] = [ReleaseDomain(domid)]
        owned: list[str] = []
        for path, node in self.store.walk("/"):
            if node.perms[0].domid == domid and not any(path.startswith(o + "/") for o in owned):
                owned.append(path)
        journal = ops.Journal()
        ctx = ops.Ctx(self.store, self.domains.caller(0), self.quota, journal)
        for path in owned:
            if path != "/":
                ops.rm(ctx, path)
        out.extend(self.fire(journal.changes))
        self.domains.forget(domid)
        out.extend(self.fire_special("@releaseDomain"))
        return out


_t = XsdSockmsgType
# Keyed by plain ints (see below): a decoded packet's type is an int, not the enum.
_HANDLERS: dict[int, tuple[Handler, int]] = {
    _t.XS_CONTROL: (h.control, _PRIV),
    _t.XS_DIRECTORY: (h.directory, 0),
    _t.XS_READ: (h.read, 0),
    _t.XS_GET_PERMS: (h.get_perms, 0),
    _t.XS_WATCH: (h.watch, _NOTID),
    _t.XS_UNWATCH: (h.unwatch, _NOTID),
    _t.XS_TRANSACTION_START: (h.transaction_start, 0),
    _t.XS_TRANSACTION_END: (h.transaction_end, 0),
    _t.XS_INTRODUCE: (h.introduce, _PRIV),
    _t.XS_RELEASE: (h.release, _PRIV),
    _t.XS_GET_DOMAIN_PATH: (h.get_domain_path, 0),
    _t.XS_WRITE: (h.write, 0),
    _t.XS_MKDIR: (h.mkdir, 0),
    _t.XS_RM: (h.rm, 0),
    _t.XS_SET_PERMS: (h.set_perms, 0),
    _t.XS_IS_DOMAIN_INTRODUCED: (h.is_domain_introduced, _PRIV),
    _t.XS_RESUME: (h.resume, _PRIV),
    _t.XS_SET_TARGET: (h.set_target, _PRIV),
    _t.XS_RESET_WATCHES: (h.reset_watches, 0),
    _t.XS_DIRECTORY_PART: (h.directory_part, 0),
}
_HANDLERS = {int(t): entry for t, entry in _HANDLERS.items()}

__all__ = [
    "CloseConnection",
    "Connection",
    "Effect",
    "IntroduceDomain",
    "ReleaseDomain",
    "Request",
    "Send",
    "XenstoreCore",
]
