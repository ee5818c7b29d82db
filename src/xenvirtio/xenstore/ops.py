"""The node operations with C xenstored's rules: permissions, implicit creation, quotas.

Each operation works on a :class:`Ctx` (a store, the caller, the quota and a
:class:`Journal`) and either completes or raises :class:`XsError` before changing
anything. The journal records every node the operation looked at, with the generation
it had (what a transaction's conflict check needs), and the changes watches fire on.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX
from xenvirtio.xenstore.paths import ROOT, ancestors, basename, parent
from xenvirtio.xenstore.perms import (
    Access,
    Caller,
    Perms,
    access_for,
    allows,
    parse_perms,
    with_owner,
)
from xenvirtio.xenstore.quota import Quota
from xenvirtio.xenstore.store import RECORD_HEADER_SIZE, RECORD_PERM_SIZE, Node, Store
from xenvirtio.xenstore.wire import XsError


@dataclass(frozen=True)
class Change:
    """A node changed: watches on ``path`` (``exact``) or above it (not ``exact``) fire.

    Watchers able to read under any of ``perms`` (the node's old and new permissions and
    its parent's, C xenstored ``watch_permitted``) get the event.
    """

    path: str
    exact: bool
    perms: tuple[Perms, ...]


class Journal:
    """What one request, or a whole transaction, looked at and changed."""

    __slots__ = ("accessed", "changes", "created", "limit", "track")

    def __init__(self, track: bool = False, limit: int | None = None) -> None:
        self.track = track  # record looked-at nodes (transactions only)
        self.limit = limit  # most distinct nodes a transaction may touch
        self.accessed: dict[str, int | None] = {}
        self.changes: list[Change] = []
        self.created = False

    def saw(self, path: str, node: Node | None) -> None:
        """Record the generation ``path`` had when first looked at (``None``: absent)."""
        if not self.track or path in self.accessed:
            return
        if self.limit is not None and len(self.accessed) >= self.limit:
            raise XsError("ENOSPC", "too many nodes accessed in one transaction")
        self.accessed[path] = None if node is None else node.generation

    def changed(self, change: Change) -> None:
        self.changes.append(change)


class Ctx:
    """What a node operation works on: a store, the caller, the quota, a journal."""

    __slots__ = ("caller", "journal", "quota", "store")

    def __init__(
        self, store: Store, caller: Caller, quota: Quota, journal: Journal | None = None
    ) -> None:
        self.store = store
        self.caller = caller
        self.quota = quota
        self.journal = Journal() if journal is None else journal

    def lookup(self, path: str) -> Node | None:
        node = self.store.get(path)
        journal = self.journal
        if journal.track:
            journal.saw(path, node)
        return node

    def perms_of(self, path: str) -> Perms | None:
        """Permissions of a node for watch checks (not a read of the request)."""
        node = self.store.get(path)
        return None if node is None else node.perms

    def check_size(self, size: int) -> None:
        if not self.caller.privileged and size >= self.quota.node_size:
            raise XsError("ENOSPC", "node too big")


def get_node(ctx: Ctx, path: str, want: Access) -> Node:
    """The node if ``want`` is granted; else EACCES, or ENOENT only if the nearest existing
    ancestor grants some of ``want`` (C ``get_node``/``errno_from_parents``: callers learn
    nothing about nodes they could not see)."""
    node = ctx.store.get(path)  # ctx.lookup, inlined: every request comes through here
    journal = ctx.journal
    if journal.track:
        journal.saw(path, node)
    if node is not None:
        if allows(ctx.caller, node.perms, want):
            return node
        raise XsError("EACCES")
    _, above = nearest_existing(ctx, path)
    if access_for(ctx.caller, above.perms) & want:
        raise XsError("ENOENT")
    raise XsError("EACCES")


def nearest_existing(ctx: Ctx, path: str) -> tuple[str, Node]:
    """The nearest existing strict ancestor of ``path`` (the root always exists)."""
    for above in ancestors(path):
        node = ctx.lookup(above)
        if node is not None:
            return above, node
    raise AssertionError("the root node is missing")


def read(ctx: Ctx, path: str) -> bytes:
    return get_node(ctx, path, Access.READ).value


def directory(ctx: Ctx, path: str) -> list[str]:
    return get_node(ctx, path, Access.READ).child_names()


def get_perms(ctx: Ctx, path: str) -> Perms:
    return get_node(ctx, path, Access.READ).perms


def directory_part(ctx: Ctx, path: str, offset: int) -> bytes:
    """XS_DIRECTORY_PART payload: ``<gen>\\0`` then names from byte ``offset`` of the child
    list, as many as fit; the last chunk ends with an extra NUL (C ``send_directory_part``)."""
    node = get_node(ctx, path, Access.READ)
    gen = f"{node.generation}".encode() + b"\0"
    children = b"".join(name.encode("latin-1") + b"\0" for name in node.children)
    if offset >= len(children):
        return gen + b"\0"
    maxlen = XENSTORE_PAYLOAD_MAX - len(gen) - 1
    end = offset
    while True:
        name_end = children.index(b"\0", end)
        if (end - offset) + (name_end - end) >= maxlen:
            break
        end = name_end + 1
        if end == len(children):
            return gen + children[offset:end] + b"\0"
    return gen + children[offset:end]


def write(ctx: Ctx, path: str, value: bytes) -> None:
    try:
        node = get_node(ctx, path, Access.WRITE)
    except XsError as err:
        if err.name != "ENOENT":
            raise
        _create(ctx, path, value)
        return
    ctx.check_size(node.record_size() - len(node.value) + len(value))
    ctx.store.set_record(path, value, node.perms)
    _changed(ctx, path, node.perms)


def mkdir(ctx: Ctx, path: str) -> None:
    """Make sure ``path`` exists; an existing node is left alone (and fires nothing)."""
    try:
        get_node(ctx, path, Access.WRITE)
    except XsError as err:
        if err.name != "ENOENT":
            raise
        _create(ctx, path, b"")


def _create(ctx: Ctx, path: str, value: bytes) -> None:
    """Create ``path`` and its missing ancestors (C ``construct_node``/``create_node``).

    New nodes inherit the permissions of the nearest existing ancestor; an unprivileged
    creator becomes their owner.
    """
    missing = [path]
    for above in ancestors(path):
        base = ctx.lookup(above)
        if base is not None:
            break
        missing.insert(0, above)
    assert base is not None
    perms = base.perms if ctx.caller.privileged else with_owner(base.perms, ctx.caller.domid)
    quota = ctx.quota.entries_per_domain
    if not ctx.caller.privileged and ctx.store.count(ctx.caller.domid) + len(missing) > quota:
        raise XsError("ENOSPC", "entries quota")
    own = RECORD_HEADER_SIZE + RECORD_PERM_SIZE * len(perms)
    ctx.check_size(own + len(value))
    for child in missing[1:]:
        ctx.check_size(own + len(basename(child)) + 1)
    ctx.check_size(base.record_size() + len(basename(missing[0])) + 1)
    ctx.store.create(path, value, perms, missing)
    ctx.journal.created = True
    _changed(ctx, path, perms)


def rm(ctx: Ctx, path: str) -> None:
    """Remove ``path`` and its subtree; a missing node whose parent exists is fine."""
    try:
        get_node(ctx, path, Access.WRITE)
    except XsError as err:
        if err.name == "ENOENT" and ctx.lookup(parent(path)) is not None:
            return
        raise
    if path == ROOT:
        raise XsError("EINVAL", "cannot remove the root")
    for below, node in ctx.store.walk(path):
        ctx.journal.saw(below, node)
    parent_node = ctx.lookup(parent(path))
    assert parent_node is not None
    removed = ctx.store.delete(path)
    perms_at = {p: n.perms for p, n in removed}
    perms_at[parent(path)] = parent_node.perms
    # C delnode_sub: the removed root fires watches at or above it, every node below
    # fires the watches set exactly on it.
    for below, node in removed:
        ctx.journal.changed(Change(below, below != path, (node.perms, perms_at[parent(below)])))


def set_perms(ctx: Ctx, path: str, texts: list[str]) -> None:
    if not ctx.caller.privileged and len(texts) > ctx.quota.perms_per_node:
        raise XsError("ENOSPC", "too many permissions")
    perms = parse_perms(texts)
    node = get_node(ctx, path, Access.WRITE | Access.OWNER)
    if not ctx.caller.privileged and perms[0].domid != node.perms[0].domid:
        raise XsError("EPERM", "only a privileged domain may change a node's owner")
    ctx.check_size(node.record_size() + RECORD_PERM_SIZE * (len(perms) - len(node.perms)))
    ctx.store.set_record(path, node.value, perms)
    _changed(ctx, path, perms, node.perms)


def _changed(ctx: Ctx, path: str, perms: Perms, old: Perms | None = None) -> None:
    above = ctx.perms_of(parent(path)) if path != ROOT else None
    options = tuple(p for p in (old, perms, above) if p is not None)
    ctx.journal.changed(Change(path, False, options))
