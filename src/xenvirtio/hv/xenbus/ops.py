"""The XenStore operations the XenBus helpers need, and transactions retried on EAGAIN.

:class:`XenstoreOps` is a structural type: the blocking
:class:`~xenvirtio.xenstore.client.XenstoreClient` (and its transactions) fit it, and so
does any in-memory fake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from xenvirtio.xenstore.client_protocol import XenstoreError
from xenvirtio.xenstore.perms import Perm

log = logging.getLogger("xenvirtio.xenbus")

T = TypeVar("T")
TRANSACTION_RETRIES = 16


class XenstoreOps(Protocol):
    """The XenStore operations these helpers use, on a connection or in a transaction."""

    def read(self, path: str) -> bytes: ...
    def write(self, path: str, value: bytes | str) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def rm(self, path: str) -> None: ...
    def directory(self, path: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...
    def get_perms(self, path: str) -> list[Perm]: ...
    def set_perms(self, path: str, perms: Sequence[Perm]) -> None: ...


class XenstoreClientOps(XenstoreOps, Protocol):
    """A connection: the operations plus transactions and watches."""

    def transaction(self) -> AbstractContextManager[XenstoreOps]: ...
    def watch(self, path: str, token: str) -> None: ...
    def unwatch(self, path: str, token: str) -> None: ...


def in_transaction(
    xs: XenstoreClientOps, fn: Callable[[XenstoreOps], T], retries: int = TRANSACTION_RETRIES
) -> T:
    """Run ``fn(t)`` in a transaction; run it again while the commit says ``EAGAIN``.

    ``fn`` must be safe to repeat: it sees a fresh snapshot each time.
    """
    for attempt in range(retries + 1):
        try:
            with xs.transaction() as t:
                result = fn(t)
            return result
        except XenstoreError as exc:
            if exc.name != "EAGAIN" or attempt == retries:
                raise
            log.debug("transaction conflict, retry %d", attempt + 1)
    raise AssertionError("unreachable")


def read_optional(xs: XenstoreOps, path: str) -> bytes | None:
    """The value at ``path``, or None if there is no such node."""
    try:
        return xs.read(path)
    except XenstoreError as exc:
        if exc.name == "ENOENT":
            return None
        raise
