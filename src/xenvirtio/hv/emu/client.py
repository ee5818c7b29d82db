"""A connection to the emulated hypervisor: one handle, one SOCK_SEQPACKET socket.

Each libxen* handle (``xenevtchn_open`` ...) is its own connection, so closing a handle,
or the process dying, releases exactly what that handle held. Calls are synchronous:
one request, one reply (with file descriptors); a lock keeps threads from interleaving.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenvirtio.hv.api.errors import HypervisorError, hv_error
from xenvirtio.hv.emu.pagemap import PageMap
from xenvirtio.hv.emu.protocol import (
    MAX_MESSAGE,
    ProtocolError,
    decode_reply,
    encode_request,
)
from xenvirtio.hv.emu.zygote import recv_fds, send_fds

HV_SOCKET = "hv.sock"
MAX_REPLY_FDS = 253  # SCM_MAX_FD


@dataclass(frozen=True)
class Result:
    value: Any
    fds: list[int]
    blob: bytes

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)


class Connection:
    """One handle's connection to the daemon."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, run_dir: str | os.PathLike[str]) -> Connection:
        """A dom0 connection through the daemon's socket in ``run_dir``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(Path(run_dir) / HV_SOCKET))
        except OSError as exc:
            sock.close()
            raise HypervisorError(
                exc.errno or errno.ECONNREFUSED,
                f"no emu hypervisor at {run_dir} ({exc.strerror}); run `xenvirtio host start`",
            ) from None
        return cls(sock)

    @classmethod
    def from_fd(cls, fd: int) -> Connection:
        return cls(socket.socket(fileno=fd))

    def call(self, op: str, args: Mapping[str, Any] | None = None, blob: bytes = b"") -> Result:
        """Send one request; return its result or raise its ``HypervisorError``."""
        data = encode_request(op, args, blob)
        with self._lock:
            if self.closed:
                raise HypervisorError(errno.EBADF, "handle is closed")
            try:
                send_fds(self.sock, data, [])
                raw, fds = recv_fds(self.sock, MAX_MESSAGE, MAX_REPLY_FDS)
            except OSError as exc:
                raise HypervisorError(errno.ESHUTDOWN, f"hypervisor connection: {exc}") from None
        if not raw:
            for fd in fds:
                os.close(fd)
            raise HypervisorError(errno.ESHUTDOWN, "the hypervisor closed this handle")
        try:
            reply = decode_reply(raw)
        except ProtocolError as exc:
            for fd in fds:
                os.close(fd)
            raise HypervisorError(errno.EPROTO, str(exc)) from None
        if reply.error is not None:
            for fd in fds:
                os.close(fd)
            raise hv_error(reply.error, f"{op}: {reply.message}", gntst=reply.gntst)
        return Result(reply.value, fds, reply.blob)

    def open_another(self) -> Connection:
        """A new handle of the same domain (``xen*_open`` again)."""
        result = self.call("open")
        return Connection.from_fd(result.fds[0])

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


UNDO = {
    "gnttab.map": "gnttab.unmap",
    "gntshr.share": "gntshr.unshare",
    "foreign.map": "foreign.unmap",
    "foreign.map_resource": "foreign.unmap",
}


def call_and_map(
    conn: Connection, op: str, args: Mapping[str, Any], writable: bool
) -> tuple[int, Any, PageMap]:
    """Call a mapping operation and map the pages it hands back: (handle, value, pages).

    If mapping fails locally, the hypervisor side is undone so nothing stays pinned.
    """
    result = conn.call(op, args)
    handle = int(result.value["handle"])
    try:
        pages = PageMap(result.fds[0], result.value["offsets"], writable)
    except (OSError, ValueError):
        with contextlib.suppress(HypervisorError):
            conn.call(UNDO[op], {"handle": handle})
        raise
    finally:
        result.close_fds()
    return handle, result.value, pages
