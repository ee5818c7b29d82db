"""Transports of the XenStore connection layer: a unix socket or a domain's shared ring.

Like oxenstored's ``backend = Fd | Xenmmap``, both transports offer the same small
:class:`Backend` surface, so one connection engine (daemon side) and one client stream
(client side) serve either:

- ``recv()``  bytes available now (``b""`` if none); ``EOFError`` when the peer is gone
- ``send(data)``  how many bytes of ``data`` the transport took (0 if it is full)
- ``kick()``  tell the peer something moved (the ring's event channel; no-op on sockets)
- ``fileno()``  readable when ``recv`` may have data or (ring) the peer freed space

A ring is reached through a :class:`RingChannel`: the page plus its event channel, as the
hypervisor layer (or :mod:`xenvirtio.testing.xs_ring`) provides it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from xenvirtio.spec.xs_wire import XENSTORE_RING_SIZE
from xenvirtio.xenstore.ring import RingError, Role, XenstoreRing

RECV_SIZE = 256 * 1024  # the daemon's read per event
CLIENT_RECV_SIZE = 64 * 1024
DEFAULT_SOCKET_PATH = "/var/run/xenstored/socket"


def default_socket_path() -> str:
    """``$XENSTORED_PATH`` (as libxenstore reads it), else Xen's default socket path."""
    return os.environ.get("XENSTORED_PATH") or DEFAULT_SOCKET_PATH


@runtime_checkable
class RingChannel(Protocol):
    """A domain's xenstore page and its event channel, seen from one end."""

    interface: memoryview  # the 4096-byte xenstore_domain_interface page

    def notify(self) -> None:
        """Kick the other end."""

    def fileno(self) -> int:
        """A file descriptor that is readable when the other end kicked."""

    def ack(self) -> None:
        """Consume the pending kick."""

    def close(self) -> None:
        """Release the page and the event channel."""


# (domid, gfn, port) -> the daemon's end of that domain's ring (XS_INTRODUCE).
DomainConnector = Callable[[int, int, int], RingChannel]


class Backend(Protocol):
    """What the connection engine and the clients need from a transport."""

    is_ring: bool

    def fileno(self) -> int: ...

    def recv(self) -> bytes: ...

    def send(self, data: bytes | bytearray | memoryview) -> int: ...

    def kick(self) -> None: ...

    def close(self) -> None: ...


class SocketBackend:
    """A connected stream socket; ``recv``/``send`` never block.

    Reads land in ``scratch`` and are copied out at their real size: asking ``recv`` for
    a large buffer would allocate (and, past malloc's mmap threshold, map and unmap) that
    much on every call. The daemon shares one scratch buffer among all its connections
    (it reads them one at a time); a client gets its own.

    With ``blocking_reads`` the socket stays in blocking mode (each non-blocking call
    passes ``MSG_DONTWAIT``) so a client with nothing else to do can sit in
    ``recv_blocking`` without a poll round first.
    """

    is_ring = False

    def __init__(
        self,
        sock: socket.socket,
        blocking_reads: bool = False,
        scratch: bytearray | None = None,
    ) -> None:
        sock.setblocking(blocking_reads)
        self.sock = sock
        self._fd = sock.fileno()
        self._flags = socket.MSG_DONTWAIT if blocking_reads else 0
        self._scratch = scratch if scratch is not None else bytearray(CLIENT_RECV_SIZE)
        self._view = memoryview(self._scratch)

    def fileno(self) -> int:
        return self._fd

    def recv(self) -> bytes:
        try:
            n = self.sock.recv_into(self._scratch, 0, self._flags)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            raise EOFError(str(exc)) from exc
        if not n:
            raise EOFError("peer closed the connection")
        return self._view[:n].tobytes()

    def recv_blocking(self) -> bytes:
        """Wait for data (``blocking_reads`` sockets only); EOFError when the peer is gone."""
        try:
            n = self.sock.recv_into(self._scratch)
        except OSError as exc:
            raise EOFError(str(exc)) from exc
        if not n:
            raise EOFError("peer closed the connection")
        return self._view[:n].tobytes()

    def send(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self.sock.send(data, self._flags)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise EOFError(str(exc)) from exc

    def kick(self) -> None:
        pass

    def shutdown(self) -> None:
        """Wake a thread blocked in ``recv_blocking`` (it sees EOF)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


class RingBackend:
    """One end of a xenstore ring; notifies the peer only when an index moved."""

    is_ring = True

    def __init__(self, channel: RingChannel, role: Role) -> None:
        self.channel = channel
        self.ring = XenstoreRing(channel.interface, role)
        self._moved = False
        self.closed = False

    def fileno(self) -> int:
        return self.channel.fileno()

    def recv(self) -> bytes:
        """Consume the kick, then everything the peer published (RingError if broken)."""
        self.channel.ack()
        data = self.ring.read(XENSTORE_RING_SIZE)
        if data:
            self._moved = True
        return data

    def send(self, data: bytes | bytearray | memoryview) -> int:
        n = self.ring.write(data)
        if n:
            self._moved = True
        return n

    def kick(self) -> None:
        if self._moved:
            self._moved = False
            self.channel.notify()

    def force_kick(self) -> None:
        self._moved = False
        self.channel.notify()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.channel.close()


__all__ = [
    "Backend",
    "DomainConnector",
    "RingBackend",
    "RingChannel",
    "RingError",
    "SocketBackend",
    "default_socket_path",
]
