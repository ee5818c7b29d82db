"""The XenStore tree: immutable, structurally shared nodes (after oxenstored's store.ml).

A :class:`Node` is never changed once built; an update rebuilds the nodes on the path from
the root and shares everything else. Taking a snapshot (a transaction's view) is copying a
root reference. Every change to a node's own record (value, permissions or list of child
names) gives it a fresh, unique generation from the store's counter, as C xenstored does;
a node whose descendants change keeps its generation. Children keep creation order, as
C xenstored's child lists do (a new child is appended).

This module is mechanics only: permission and quota rules live in :mod:`.ops`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from xenvirtio.xenstore.paths import ROOT, basename, components, join
from xenvirtio.xenstore.perms import Perm, PermKind, Perms

# C xenstored's record: struct xs_tdb_record_hdr (u64 generation, u32 num_perms, datalen,
# childlen; 24 bytes with padding) + 8 bytes per struct xs_permissions + data + children.
RECORD_HEADER_SIZE = 24
RECORD_PERM_SIZE = 8

DOM0_NONE: Perms = (Perm(0, PermKind.NONE),)


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One node. ``children`` maps name -> node in creation order and is never mutated."""

    value: bytes
    perms: Perms
    children: dict[str, Node]
    generation: int
    childlen: int = 0  # bytes of the NUL-terminated child name list

    def child_names(self) -> list[str]:
        return list(self.children)

    def record_size(self) -> int:
        """Size of C xenstored's record for this node (what the node-size quota bounds)."""
        return (
            RECORD_HEADER_SIZE
            + RECORD_PERM_SIZE * len(self.perms)
            + len(self.value)
            + self.childlen
        )

    def with_record(self, value: bytes, perms: Perms, generation: int) -> Node:
        return Node(value, perms, self.children, generation, self.childlen)

    def with_child(self, name: str, child: Node, generation: int | None = None) -> Node:
        """This node with child ``name`` set; a new name is appended (and needs a generation)."""
        children = dict(self.children)
        added = name not in children
        children[name] = child
        childlen = self.childlen + (len(name) + 1 if added else 0)
        gen = self.generation if generation is None else generation
        return Node(self.value, self.perms, children, gen, childlen)

    def without_child(self, name: str, generation: int) -> Node:
        children = dict(self.children)
        del children[name]
        return Node(self.value, self.perms, children, generation, self.childlen - len(name) - 1)


def leaf(value: bytes, perms: Perms, generation: int) -> Node:
    return Node(value, perms, {}, generation, 0)


@dataclass
class Generations:
    """The global generation counter shared by the live store and every snapshot."""

    last: int = 0

    def next(self) -> int:
        self.last += 1
        return self.last


@dataclass
class Store:
    """A root plus per-owner node counts (the entries quota); cheap to snapshot."""

    root: Node
    entries: dict[int, int]
    gens: Generations = field(default_factory=Generations)

    @classmethod
    def initial(cls) -> Store:
        """C xenstored's fresh store: ``/``, ``/tool``, ``/tool/xenstored``, all ``n0``."""
        gens = Generations()
        xenstored = leaf(b"", DOM0_NONE, gens.next())
        tool = leaf(b"", DOM0_NONE, gens.next()).with_child("xenstored", xenstored)
        root = leaf(b"", DOM0_NONE, gens.next()).with_child("tool", tool)
        return cls(root, {0: 3}, gens)

    def snapshot(self) -> Store:
        return Store(self.root, dict(self.entries), self.gens)

    # -- reading -----------------------------------------------------------------------

    def get(self, path: str) -> Node | None:
        node: Node | None = self.root
        if path == ROOT:
            return node
        for name in path[1:].split("/"):  # components(path), inlined: the hottest walk
            if node is None:
                return None
            node = node.children.get(name)
        return node

    def generation(self, path: str) -> int | None:
        node = self.get(path)
        return None if node is None else node.generation

    def count(self, domid: int) -> int:
        """Nodes owned by ``domid``."""
        return self.entries.get(domid, 0)

    def walk(self, path: str) -> Iterator[tuple[str, Node]]:
        """Pre-order ``(path, node)`` of the subtree at ``path`` (nothing if absent)."""
        top = self.get(path)
        stack = [] if top is None else [(path, top)]
        while stack:
            here, node = stack.pop()
            yield here, node
            stack.extend((join(here, n), c) for n, c in reversed(node.children.items()))

    # -- writing -----------------------------------------------------------------------

    def _rebuild(self, path: str, new: Node | None, parent_gen: int | None) -> None:
        """Put ``new`` at ``path`` (``None`` removes it); rebuild the ancestors.

        ``parent_gen`` is the parent's new generation when its child list changes.
        """
        names = components(path)
        chain = [self.root]
        for name in names[:-1]:
            chain.append(chain[-1].children[name])
        parent = chain[-1]
        name = names[-1]
        if new is None:
            assert parent_gen is not None
            rebuilt = parent.without_child(name, parent_gen)
        else:
            rebuilt = parent.with_child(name, new, parent_gen)
        for ancestor, child_name in zip(reversed(chain[:-1]), reversed(names[:-1]), strict=True):
            rebuilt = ancestor.with_child(child_name, rebuilt)
        self.root = rebuilt

    def _count(self, domid: int, delta: int) -> None:
        self.entries[domid] = self.entries.get(domid, 0) + delta

    def set_record(self, path: str, value: bytes, perms: Perms) -> Node:
        """Replace an existing node's value and permissions (moving its entry count)."""
        old = self.get(path)
        assert old is not None
        new = old.with_record(value, perms, self.gens.next())
        if path == ROOT:
            self.root = new
        else:
            self._rebuild(path, new, None)
        if old.perms[0].domid != perms[0].domid:
            self._count(old.perms[0].domid, -1)
            self._count(perms[0].domid, +1)
        return new

    def create(self, path: str, value: bytes, perms: Perms, missing: list[str]) -> None:
        """Create ``missing`` (nearest the root first, ending with ``path``), all with ``perms``.

        The parent of ``missing[0]`` exists; intermediate nodes get an empty value.
        """
        assert missing and missing[-1] == path
        node = leaf(value, perms, self.gens.next())
        for child_path in reversed(missing[1:]):
            node = leaf(b"", perms, self.gens.next()).with_child(basename(child_path), node)
        self._rebuild(missing[0], node, self.gens.next())
        self._count(perms[0].domid, len(missing))

    def delete(self, path: str) -> list[tuple[str, Node]]:
        """Remove the subtree at ``path`` (not the root); its nodes, deepest first."""
        assert path != ROOT
        removed = list(self.walk(path))
        removed.reverse()
        for _, node in removed:
            self._count(node.perms[0].domid, -1)
        self._rebuild(path, None, self.gens.next())
        return removed


def merge(work: Store, base: Store, live: Store) -> Store:
    """Three-way merge of a transaction: ``work`` = ``base`` + the transaction's changes.

    Valid when every node whose own record the transaction changed is unchanged between
    ``base`` and ``live`` (the transaction's conflict check). Unchanged subtrees are
    recognised by identity and taken from ``live``.
    """
    root = _merge_nodes(work.root, base.root, live.root)
    entries = dict(live.entries)
    for domid in set(work.entries) | set(base.entries):
        delta = work.entries.get(domid, 0) - base.entries.get(domid, 0)
        if delta:
            entries[domid] = entries.get(domid, 0) + delta
    return Store(root, entries, live.gens)


def _merge_nodes(w: Node, b: Node, lv: Node) -> Node:
    """Iterative (trees can be ~1500 levels deep) merge of one node and its subtree."""
    if w is b:
        return lv
    stack = [_Frame.of(w, b, lv)]
    while True:
        frame = stack[-1]
        while frame.todo:
            name = frame.todo[-1]
            wc = frame.w.children.get(name)
            bc = frame.b.children.get(name)
            lc = frame.lv.children.get(name)
            if wc is not None and wc is not bc and bc is not None and lc is not None:
                stack.append(_Frame.of(wc, bc, lc))  # changed below here on both sides
                break
            # Untouched by the transaction: live's; created in it (or gone live): work's.
            chosen = lc if (wc is None or wc is bc) and lc is not None else wc
            assert chosen is not None
            frame.done[name] = chosen
            frame.todo.pop()
        else:
            stack.pop()
            node = frame.build()
            if not stack:
                return node
            stack[-1].done[stack[-1].todo.pop()] = node


@dataclass
class _Frame:
    w: Node
    b: Node
    lv: Node
    todo: list[str]  # child names still to merge, last first
    done: dict[str, Node]

    @classmethod
    def of(cls, w: Node, b: Node, lv: Node) -> _Frame:
        # The transaction changed this node's own record: its child list is the one to keep.
        names = list(w.children) if w.generation != b.generation else list(lv.children)
        return cls(w, b, lv, names[::-1], {})

    def build(self) -> Node:
        own = self.w if self.w.generation != self.b.generation else self.lv
        childlen = sum(len(n) + 1 for n in self.done)
        return Node(own.value, own.perms, self.done, own.generation, childlen)
