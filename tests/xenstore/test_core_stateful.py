"""Stateful check of the core against a small dict-based model of XenStore.

Three domains (0 privileged, 1 and 2 not) read, write, mkdir, rm, list and set
permissions, outside and inside concurrent transactions. The model is deliberately
naive: a flat dict of path -> (value, perms) with the documented rules. Checked:

* every reply outside a transaction equals the model's;
* a committed transaction is serialisable at its commit: replaying its requests on the
  model at that moment gives exactly the replies the transaction got;
* EAGAIN only if something committed since the transaction started touched a path
  related to (equal to, above or below) a path the transaction used;
* after every step the store equals the model (values, permissions, child order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)
from xs_support import Harness

from xenvirtio.spec.xs_wire import XsdSockmsgType as T
from xenvirtio.xenstore.control import check_store

PATHS = ["/a", "/a/b", "/a/b/c", "/a/d", "/e", "/e/f"]
DOMAINS = [0, 1, 2]
Model = dict[str, tuple[bytes, tuple[str, ...]]]
Reply = tuple[str, bytes]  # ("ok", payload) or ("err", name)


class Refused(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def related(p: str, q: str) -> bool:
    def under(x: str, y: str) -> bool:
        return y == "/" or x == y or x.startswith(y + "/")

    return under(p, q) or under(q, p)


def access(domid: int, perms: tuple[str, ...]) -> set[str]:
    if domid == 0 or int(perms[0][1:]) == domid:
        return {"r", "w", "o"}
    letters = {"n": set(), "r": {"r"}, "w": {"w"}, "b": {"r", "w"}}
    for p in perms[1:]:
        if int(p[1:]) == domid:
            return set(letters[p[0]])
    return set(letters[perms[0][0]])


def lookup(m: Model, domid: int, path: str, want: set[str]) -> tuple[bytes, tuple[str, ...]]:
    if path in m:
        if want <= access(domid, m[path][1]):
            return m[path]
        raise Refused("EACCES")
    above = parent(path)
    while above not in m:
        above = parent(above)
    raise Refused("ENOENT" if access(domid, m[above][1]) & want else "EACCES")


def create(m: Model, domid: int, path: str, value: bytes) -> None:
    missing = [path]
    while parent(missing[0]) not in m:
        missing.insert(0, parent(missing[0]))
    perms = m[parent(missing[0])][1]
    if domid != 0:
        perms = (f"{perms[0][0]}{domid}", *perms[1:])
    for p in missing:
        m[p] = (value if p == path else b"", perms)


def apply(m: Model, domid: int, op: str, path: str, arg: object) -> Reply:
    """The model's answer to one request (mutating ``m`` on success)."""
    try:
        return ("ok", _apply(m, domid, op, path, arg))
    except Refused as r:
        return ("err", r.name.encode())


def _apply(m: Model, domid: int, op: str, path: str, arg: object) -> bytes:
    if op == "read":
        return lookup(m, domid, path, {"r"})[0]
    if op == "dir":
        lookup(m, domid, path, {"r"})
        return b"".join(
            p.rsplit("/", 1)[1].encode() + b"\0" for p in m if parent(p) == path and p != "/"
        )
    if op == "getperms":
        return b"".join(p.encode() + b"\0" for p in lookup(m, domid, path, {"r"})[1])
    if op in ("write", "mkdir"):
        try:
            value, perms = lookup(m, domid, path, {"w"})
            if op == "write":
                assert isinstance(arg, bytes)
                m[path] = (arg, perms)
        except Refused as r:
            if r.name != "ENOENT":
                raise
            create(m, domid, path, arg if isinstance(arg, bytes) else b"")
        return b"OK\0"
    if op == "rm":
        try:
            lookup(m, domid, path, {"w"})
        except Refused as r:
            if r.name == "ENOENT" and parent(path) in m:
                return b"OK\0"
            raise
        for p in [p for p in m if p == path or p.startswith(path + "/")]:
            del m[p]
        return b"OK\0"
    assert op == "setperms" and isinstance(arg, tuple)
    value, perms = lookup(m, domid, path, {"w", "o"})
    if domid != 0 and arg[0][1:] != perms[0][1:]:
        raise Refused("EPERM")
    m[path] = (value, arg)
    return b"OK\0"


MODIFYING = {"write", "mkdir", "rm", "setperms"}
perms_lists = st.lists(
    st.tuples(st.sampled_from("nrwb"), st.sampled_from(DOMAINS)).map(lambda t: f"{t[0]}{t[1]}"),
    min_size=1,
    max_size=3,
).map(tuple)
ops = st.one_of(
    st.tuples(st.sampled_from(["read", "dir", "getperms", "mkdir", "rm"]), st.none()),
    st.tuples(st.just("write"), st.binary(max_size=6)),
    st.tuples(st.just("setperms"), perms_lists),
)


@dataclass
class Txn:
    domid: int
    tx_id: int
    start_seq: int
    log: list[tuple[str, str, object, Reply]] = field(default_factory=list)


class XenstoreMachine(RuleBasedStateMachine):
    txns = Bundle("txns")

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness()
        for d in DOMAINS:
            self.h.connect(d + 1, d)
        self.model: Model = {p: (b"", ("n0",)) for p in ("/", "/tool", "/tool/xenstored")}
        # Two shared directories so that unprivileged domains have somewhere to work.
        for path, perms in (("/a", ("n0", "b1", "b2")), ("/e", ("r1", "w2"))):
            for op, arg in (("mkdir", None), ("setperms", perms)):
                assert self.request(0, op, path, arg) == apply(self.model, 0, op, path, arg)
        self.changes: list[tuple[int, str]] = []  # (seq, path) of committed changes
        self.seq = 0
        self.open = dict.fromkeys(DOMAINS, 0)  # open transactions per domain

    def request(self, domid: int, op: str, path: str, arg: object, tx: int = 0) -> Reply:
        conn, h = domid + 1, self.h
        if op == "write":
            assert isinstance(arg, bytes)
            r = h.write(conn, path, arg, tx=tx)
        elif op == "setperms":
            assert isinstance(arg, tuple)
            r = h.perms(conn, path, *arg, tx=tx)
        else:
            kind = {
                "read": T.XS_READ,
                "dir": T.XS_DIRECTORY,
                "getperms": T.XS_GET_PERMS,
                "mkdir": T.XS_MKDIR,
                "rm": T.XS_RM,
            }[op]
            r = h.send(conn, kind, path, tx=tx)
        return ("err", r.error.encode()) if r.error else ("ok", r.payload)

    def committed(self, path: str) -> None:
        self.seq += 1
        self.changes += [(self.seq, path), (self.seq, parent(path))]

    @rule(domid=st.sampled_from(DOMAINS), op=ops, path=st.sampled_from(PATHS))
    def direct(self, domid: int, op: tuple[str, object], path: str) -> None:
        got = self.request(domid, op[0], path, op[1])
        assert got == apply(self.model, domid, op[0], path, op[1])
        if op[0] in MODIFYING and got[0] == "ok":
            self.committed(path)

    @rule(target=txns, domid=st.sampled_from(DOMAINS))
    def start(self, domid: int) -> Txn | MultipleResults[Txn]:
        if domid != 0 and self.open[domid] >= 10:  # the transactions quota
            assert self.h.send(domid + 1, T.XS_TRANSACTION_START, "").error == "ENOSPC"
            return multiple()
        self.open[domid] += 1
        return Txn(domid, self.h.start(domid + 1), self.seq)

    @rule(txn=txns, steps=st.lists(st.tuples(ops, st.sampled_from(PATHS)), min_size=1, max_size=4))
    def in_transaction(self, txn: Txn, steps: list[tuple[tuple[str, object], str]]) -> None:
        for (op, arg), path in steps:
            txn.log.append((op, path, arg, self.request(txn.domid, op, path, arg, txn.tx_id)))

    @rule(txn=consumes(txns), commit=st.booleans())
    def end(self, txn: Txn, commit: bool) -> None:
        reply = self.h.end(txn.domid + 1, txn.tx_id, commit)
        self.open[txn.domid] -= 1
        if not commit:
            assert reply.error is None
            return
        if reply.error == "EAGAIN":
            used = {p for _, p, _, _ in txn.log}
            assert any(
                s > txn.start_seq and related(c, u) for s, c in self.changes for u in used
            ), "EAGAIN without a conflicting commit"
            return
        assert reply.error is None
        replay = dict(self.model)
        for op, path, arg, got in txn.log:
            assert apply(replay, txn.domid, op, path, arg) == got, (op, path)
        self.model = replay
        for op, path, _, got in txn.log:
            if op in MODIFYING and got[0] == "ok":
                self.committed(path)

    @invariant()
    def store_matches_model(self) -> None:
        store = self.h.core.store
        seen = {}
        for path, node in store.walk("/"):
            seen[path] = (node.value, tuple(str(p) for p in node.perms))
            kids = [p.rsplit("/", 1)[1] for p in self.model if parent(p) == path and p != "/"]
            assert node.child_names() == kids, path
        assert seen == self.model
        assert check_store(self.h.core) == []
        assert self.h.core.internal_errors == 0


XenstoreMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50)
TestXenstoreMachine = XenstoreMachine.TestCase
