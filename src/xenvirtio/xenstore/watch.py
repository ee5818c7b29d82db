"""Watches: who asked to hear about which paths, and the XS_WATCH_EVENT packets they get.

Matching follows docs/misc/xenstore.txt and C xenstored ``fire_watches``: a change of
``path`` fires every watch set on ``path`` or one of its ancestors (``exact`` changes,
used for nodes below a removed subtree's root and for special events, fire only watches
set on exactly that path). A watch given as a relative path receives relative event
paths. Whether a connection may see an event is the caller's decision (``permitted``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.spec.xs_wire import XENSTORE_PAYLOAD_MAX, XsdSockmsgType
from xenvirtio.xenstore.paths import is_child, relative_to
from xenvirtio.xenstore.wire import Packet, XsError


@dataclass(frozen=True)
class Watch:
    """One watch of one connection; ``path`` is canonical (or a special ``@`` name)."""

    conn_id: int
    domid: int
    path: str
    token: bytes
    relative_to: str | None = None  # home prefix when registered with a relative path

    def event_path(self, path: str) -> str:
        return path if self.relative_to is None else relative_to(path, self.relative_to)

    def event(self, path: str) -> Packet | None:
        """The XS_WATCH_EVENT for a change of ``path`` (``None`` if it would not fit)."""
        payload = self.event_path(path).encode("latin-1") + b"\0" + self.token + b"\0"
        if len(payload) > XENSTORE_PAYLOAD_MAX:  # C send_event drops over-long events
            return None
        return Packet(XsdSockmsgType.XS_WATCH_EVENT, 0, 0, payload)

    def matches(self, path: str, exact: bool) -> bool:
        return path == self.path if exact else is_child(path, self.path)


class WatchRegistry:
    """All watches, per connection in registration order, counted per domain."""

    def __init__(self) -> None:
        self._by_conn: dict[int, list[Watch]] = {}
        self._per_domain: dict[int, int] = {}

    def count(self, domid: int) -> int:
        return self._per_domain.get(domid, 0)

    def of(self, conn_id: int) -> list[Watch]:
        return list(self._by_conn.get(conn_id, ()))

    def add(self, watch: Watch, limit: int | None) -> None:
        """Register; EEXIST for a duplicate (path, token), E2BIG past ``limit`` per domain."""
        mine = self._by_conn.setdefault(watch.conn_id, [])
        if any(w.path == watch.path and w.token == watch.token for w in mine):
            raise XsError("EEXIST")
        if limit is not None and self.count(watch.domid) >= limit:
            raise XsError("E2BIG", "watch quota")
        mine.append(watch)
        self._per_domain[watch.domid] = self.count(watch.domid) + 1

    def remove(self, conn_id: int, path: str, token: bytes) -> None:
        mine = self._by_conn.get(conn_id, [])
        for i, w in enumerate(mine):
            if w.path == path and w.token == token:
                del mine[i]
                self._per_domain[w.domid] -= 1
                return
        raise XsError("ENOENT")

    def drop(self, conn_id: int) -> None:
        """Forget every watch of a connection."""
        for w in self._by_conn.pop(conn_id, []):
            self._per_domain[w.domid] -= 1

    def fire(
        self, path: str, exact: bool, permitted: Callable[[int], bool]
    ) -> list[tuple[int, Packet]]:
        """Events for a change of ``path``: (conn_id, packet) in connection order."""
        out: list[tuple[int, Packet]] = []
        for conn_id, watches in self._by_conn.items():
            hits = [w for w in watches if w.matches(path, exact)]
            if not hits or not permitted(conn_id):
                continue
            for w in hits:
                packet = w.event(path)
                if packet is not None:
                    out.append((conn_id, packet))
        return out
