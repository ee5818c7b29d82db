"""`ReactorStore`: a blocking XenStore client whose watches report to a `Reactor`.

It has the operations of ``xenvirtio.hv.xenbus.ops.XenstoreClientOps``, so the XenBus
helpers and `XenbusDevice` use it unchanged; only ``watch`` differs: its events go to
the reactor's queue (from the client's watch thread) instead of ``watch_events()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from xenvirtio.hv.xenbus.ops import XenstoreOps
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.xenstore.client import XenstoreClient
from xenvirtio.xenstore.perms import Perm


class ReactorStore:
    """``client`` with watch events delivered through ``reactor``."""

    def __init__(self, client: XenstoreClient, reactor: Reactor) -> None:
        self.client = client
        self.reactor = reactor

    def read(self, path: str) -> bytes:
        return self.client.read(path)

    def write(self, path: str, value: bytes | str) -> None:
        self.client.write(path, value)

    def mkdir(self, path: str) -> None:
        self.client.mkdir(path)

    def rm(self, path: str) -> None:
        self.client.rm(path)

    def directory(self, path: str) -> list[str]:
        return self.client.directory(path)

    def exists(self, path: str) -> bool:
        return self.client.exists(path)

    def get_perms(self, path: str) -> list[Perm]:
        return self.client.get_perms(path)

    def set_perms(self, path: str, perms: Sequence[Perm]) -> None:
        self.client.set_perms(path, perms)

    @contextmanager
    def transaction(self) -> Iterator[XenstoreOps]:
        with self.client.transaction() as t:
            yield t

    def watch(self, path: str, token: str) -> None:
        self.client.watch(path, token, self.reactor.watch_callback)

    def unwatch(self, path: str, token: str) -> None:
        self.client.unwatch(path, token)
