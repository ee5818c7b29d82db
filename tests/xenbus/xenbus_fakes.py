"""An in-memory XenStore with the few operations the XenBus helpers use.

Semantics kept from the real daemon (docs/misc/xenstore.txt): writes create missing
parents, which inherit their parent's permissions; ``rm`` removes a subtree; a watch fires
once on registration and then for every change at or below its path, and for the removal
of an ancestor; a transaction works on a snapshot and its commit fails with ``EAGAIN`` if
the store changed since it started. ``fail_commits`` forces that many commits to fail.
Permissions are stored, not enforced (every connection is dom0).
"""

from __future__ import annotations

import contextlib
import copy
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from xenvirtio.xenstore.client_protocol import XenstoreError
from xenvirtio.xenstore.perms import Perm, PermKind


@dataclass
class Node:
    value: bytes
    perms: list[Perm]


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _check(path: str) -> None:
    if not path.startswith("/") or "//" in path or (path != "/" and path.endswith("/")):
        raise XenstoreError("EINVAL", path)


@dataclass
class FakeStore:
    nodes: dict[str, Node] = field(
        default_factory=lambda: {"/": Node(b"", [Perm(0, PermKind.NONE)])}
    )
    generation: int = 0
    fail_commits: int = 0
    connections: list[FakeXenstore] = field(default_factory=list)
    writes: list[tuple[str, bytes]] = field(default_factory=list)

    def connect(self) -> FakeXenstore:
        conn = FakeXenstore(self)
        self.connections.append(conn)
        return conn

    def fire(self, path: str, removed: bool) -> None:
        for conn in self.connections:
            conn.fire(path, removed)


class _View:
    """Operations on a node dict; changes are recorded for watch firing."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.changed: list[tuple[str, bool]] = []  # (path, removed)
        self.written: list[tuple[str, bytes]] = []

    def read(self, path: str) -> bytes:
        _check(path)
        if path not in self.nodes:
            raise XenstoreError("ENOENT", path)
        return self.nodes[path].value

    def exists(self, path: str) -> bool:
        return path in self.nodes

    def _create(self, path: str) -> None:
        if path in self.nodes:
            return
        self._create(_parent(path))
        self.nodes[path] = Node(b"", list(self.nodes[_parent(path)].perms))

    def write(self, path: str, value: bytes | str) -> None:
        _check(path)
        raw = value.encode() if isinstance(value, str) else bytes(value)
        self._create(path)
        self.nodes[path].value = raw
        self.changed.append((path, False))
        self.written.append((path, raw))

    def mkdir(self, path: str) -> None:
        _check(path)
        if path not in self.nodes:
            self._create(path)
            self.changed.append((path, False))

    def rm(self, path: str) -> None:
        _check(path)
        if path not in self.nodes:
            raise XenstoreError("ENOENT", path)
        for name in [n for n in self.nodes if n == path or n.startswith(path + "/")]:
            del self.nodes[name]
        self.changed.append((path, True))

    def directory(self, path: str) -> list[str]:
        _check(path)
        if path not in self.nodes:
            raise XenstoreError("ENOENT", path)
        prefix = path.rstrip("/") + "/"
        return sorted(
            {
                n[len(prefix) :]
                for n in self.nodes
                if n.startswith(prefix) and "/" not in n[len(prefix) :]
            }
        )

    def get_perms(self, path: str) -> list[Perm]:
        _check(path)
        if path not in self.nodes:
            raise XenstoreError("ENOENT", path)
        return list(self.nodes[path].perms)

    def set_perms(self, path: str, perms: Sequence[Perm]) -> None:
        _check(path)
        if path not in self.nodes:
            raise XenstoreError("ENOENT", path)
        self.nodes[path].perms = list(perms)
        self.changed.append((path, False))


class FakeXenstore(_View):
    """One connection: direct operations, transactions, watches and an event queue."""

    def __init__(self, store: FakeStore) -> None:
        super().__init__(store.nodes)
        self.store = store
        self.watches: list[tuple[str, str]] = []
        self.events: deque[tuple[str, str]] = deque()
        self.transactions = 0

    def _commit_direct(self) -> None:
        self.store.generation += 1
        self.store.writes += self.written
        changed, self.changed, self.written = self.changed, [], []
        for path, removed in changed:
            self.store.fire(path, removed)

    def write(self, path: str, value: bytes | str) -> None:
        super().write(path, value)
        self._commit_direct()

    def mkdir(self, path: str) -> None:
        super().mkdir(path)
        self._commit_direct()

    def rm(self, path: str) -> None:
        super().rm(path)
        self._commit_direct()

    def set_perms(self, path: str, perms: Sequence[Perm]) -> None:
        super().set_perms(path, perms)
        self._commit_direct()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_View]:
        self.transactions += 1
        start = self.store.generation
        view = _View(copy.deepcopy(self.store.nodes))
        yield view  # an exception propagates: the transaction is abandoned
        if self.store.fail_commits > 0:
            self.store.fail_commits -= 1
            raise XenstoreError("EAGAIN", "forced")
        if not view.changed:
            return
        if self.store.generation != start:
            raise XenstoreError("EAGAIN", "conflict")
        self.store.nodes.clear()
        self.store.nodes.update(view.nodes)
        self.store.generation += 1
        self.store.writes += view.written
        for path, removed in view.changed:
            self.store.fire(path, removed)

    def watch(self, path: str, token: str) -> None:
        self.watches.append((path, token))
        self.events.append((path, token))

    def unwatch(self, path: str, token: str) -> None:
        if (path, token) not in self.watches:
            raise XenstoreError("ENOENT", path)
        self.watches.remove((path, token))

    def fire(self, changed: str, removed: bool) -> None:
        for path, token in self.watches:
            if changed == path or changed.startswith(path + "/"):
                self.events.append((changed, token))
            elif removed and path.startswith(changed + "/"):
                self.events.append((path, token))  # an ancestor was removed

    def pop_event(self) -> tuple[str, str] | None:
        return self.events.popleft() if self.events else None
