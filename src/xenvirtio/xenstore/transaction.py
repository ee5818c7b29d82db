"""Transactions: a snapshot of the store plus the transaction's own changes.

A transaction works on ``work``, a copy of the store taken at XS_TRANSACTION_START
(``base``), and records the generation of every node it looks at (reads, writes, the
ancestors it walks when creating, every node of a subtree it removes), as C xenstored's
``access_node`` does.

Conflict rule: committing answers EAGAIN if, and only if, one of those nodes changed in
the live store since the transaction first looked at it (created, removed, or given a
new value, permissions or child list). Changes elsewhere, even to a parent's other
children, do not conflict.

To be as permissive as C xenstored, which reads each node from the live store when the
transaction first touches it, the snapshot moves forward: before each request, if the
live store moved on and nothing the transaction looked at changed, ``work`` is rebased
onto the live store (a three-way merge). A request therefore never sees older data than
C xenstored would show it, and the transaction stays serialisable at its commit.

Watch events of a transaction are collected and fire only at a successful commit.
"""

from __future__ import annotations

from xenvirtio.xenstore.ops import Change, Journal
from xenvirtio.xenstore.quota import Quota
from xenvirtio.xenstore.store import Store, merge
from xenvirtio.xenstore.wire import XsError


class Transaction:
    """One open transaction of one connection."""

    def __init__(self, tx_id: int, live: Store, node_limit: int | None) -> None:
        self.tx_id = tx_id
        self.base = live.snapshot()
        self.work = live.snapshot()
        self.journal = Journal(track=True, limit=node_limit)

    def unchanged_in(self, live: Store) -> bool:
        """Whether every node this transaction looked at is as it saw it."""
        return all(live.generation(p) == gen for p, gen in self.journal.accessed.items())

    def refresh(self, live: Store) -> Store:
        """The view for the next request: rebased onto ``live`` when that is safe."""
        if live.root is not self.base.root and self.unchanged_in(live):
            self.work = merge(self.work, self.base, live)
            self.base = live.snapshot()
        return self.work

    def commit(self, live: Store, domid: int, privileged: bool, quota: Quota) -> Store:
        """The live store with this transaction applied; EAGAIN on conflict.

        An unprivileged domain that created nodes is checked against the entries quota
        once more, as C xenstored does at commit (ENOSPC).
        """
        if not self.unchanged_in(live):
            raise XsError("EAGAIN")
        merged = merge(self.work, self.base, live)
        if self.journal.created and not privileged:
            grew = merged.count(domid) - live.count(domid)
            if grew > 0 and merged.count(domid) > quota.entries_per_domain:
                raise XsError("ENOSPC", "entries quota at commit")
        return merged

    def changes(self) -> list[Change]:
        """The watch-relevant changes, one per node in first-change order (C fires once per
        node; a non-exact change of a node wins over an exact one)."""
        merged: dict[str, Change] = {}
        for ch in self.journal.changes:
            seen = merged.get(ch.path)
            if seen is None:
                merged[ch.path] = ch
            else:
                perms = seen.perms + tuple(p for p in ch.perms if p not in seen.perms)
                merged[ch.path] = Change(ch.path, seen.exact and ch.exact, perms)
        return list(merged.values())
