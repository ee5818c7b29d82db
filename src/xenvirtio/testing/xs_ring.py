"""A local xenstore ring for tests: one shared page and two eventfds.

:func:`ring_pair` makes the two ends of a domain's xenstore connection, the daemon's and
the domain's, as :class:`~xenvirtio.xenstore.channel.RingChannel` objects. The page is an
``MAP_SHARED`` mapping of a memfd and the kicks are eventfds, so both survive ``fork``:
make the pair, fork, and let each process keep its end (and close the other).

:class:`LocalDomainConnector` is a ``DomainConnector`` for the daemon: a test registers
a pair under ``(gfn, port)`` and XS_INTRODUCE with those numbers attaches it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading

from xenvirtio.xenstore.channel import RingChannel

PAGE_SIZE = 4096


class LocalRingChannel:
    """One end: the page, a kick towards the peer and the peer's kicks towards us."""

    def __init__(self, page: mmap.mmap, kick_out: int, kick_in: int) -> None:
        self._page = page
        self.interface = memoryview(page)
        self._kick_out = kick_out
        self._kick_in = kick_in
        self.closed = False

    def notify(self) -> None:
        """Kick the peer; a peer that went away is not our problem."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._kick_out, 1)

    def fileno(self) -> int:
        return self._kick_in

    def ack(self) -> None:
        """Consume pending kicks (the eventfd is non-blocking)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._kick_in)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.interface.release()
        for fd in (self._kick_out, self._kick_in):
            os.close(fd)
        self._page.close()  # our own mapping; the peer's stays valid


def ring_pair() -> tuple[LocalRingChannel, LocalRingChannel]:
    """``(daemon_end, domain_end)`` sharing one zeroed page; fork-safe."""
    to_daemon = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    to_domain = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    # Two mappings of one memfd, so each end can unmap its own view independently.
    memfd = os.memfd_create("xenstore-page", os.MFD_CLOEXEC)
    try:
        os.ftruncate(memfd, PAGE_SIZE)
        daemon_page = mmap.mmap(memfd, PAGE_SIZE, flags=mmap.MAP_SHARED)
        domain_page = mmap.mmap(memfd, PAGE_SIZE, flags=mmap.MAP_SHARED)
    finally:
        os.close(memfd)
    daemon_end = LocalRingChannel(daemon_page, os.dup(to_domain), os.dup(to_daemon))
    domain_end = LocalRingChannel(domain_page, to_daemon, to_domain)
    return daemon_end, domain_end


class LocalDomainConnector:
    """``DomainConnector`` handing out ring ends registered under ``(gfn, port)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], RingChannel] = {}
        self.attached: dict[int, RingChannel] = {}

    def register(self, gfn: int, port: int, daemon_end: RingChannel) -> None:
        with self._lock:
            self._pending[(gfn, port)] = daemon_end

    def __call__(self, domid: int, gfn: int, port: int) -> RingChannel:
        with self._lock:
            try:
                channel = self._pending.pop((gfn, port))
            except KeyError:
                raise LookupError(f"no ring registered for gfn {gfn} port {port}") from None
            self.attached[domid] = channel
            return channel
