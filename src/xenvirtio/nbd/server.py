"""An asyncio NBD server: one :class:`BlockBackend` exported on Unix and/or loopback TCP sockets.

Each connection runs :class:`~xenvirtio.nbd.protocol.NbdServerProtocol`. Requests are read
continuously and executed concurrently as tasks; each reply is written as soon as its request
completes (out of order, matched by handle). A connection admits at most ``max_in_flight``
requests and ``max_in_flight_bytes`` of payload at once; beyond that it stops reading, which
pushes back on the client through the socket. A client that breaks the protocol loses its own
connection and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from pathlib import Path

from xenvirtio.nbd.backend import BlockBackend
from xenvirtio.nbd.dispatch import execute
from xenvirtio.nbd.events import (
    NEED_DATA,
    ExportInfo,
    NbdProtocolError,
    Reply,
    Request,
    RequestRejected,
    TransmissionStarted,
)
from xenvirtio.nbd.protocol import NbdServerProtocol
from xenvirtio.spec.nbd import NBD_DEFAULT_PREFERRED_BLOCK, NbdCmd, NbdError

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
CORK_MAX = 64 * 1024  # replies this large are written at once, not gathered


def export_info(backend: BlockBackend, name: str = "", description: str = "") -> ExportInfo:
    """What the handshake advertises for ``backend``."""
    return ExportInfo(
        name=name,
        size=backend.size,
        read_only=backend.read_only,
        can_trim=backend.can_trim,
        can_write_zeroes=backend.can_write_zeroes,
        min_block=backend.block_size,
        preferred_block=max(NBD_DEFAULT_PREFERRED_BLOCK, backend.block_size),
        description=description,
    )


class _Admission:
    """Bounds the requests and payload bytes one connection has in flight."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self._max_requests, self._max_bytes = max_requests, max_bytes
        self._requests = self._bytes = 0
        self._changed = asyncio.Condition()

    def _fits(self, cost: int) -> bool:
        if self._requests >= self._max_requests:
            return False
        return self._requests == 0 or self._bytes + cost <= self._max_bytes

    async def acquire(self, cost: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._fits(cost))
            self._requests += 1
            self._bytes += cost

    async def release(self, cost: int) -> None:
        async with self._changed:
            self._requests -= 1
            self._bytes -= cost
            self._changed.notify_all()


class _Connection:
    """One client: the read loop plus the tasks executing its requests."""

    def __init__(
        self,
        server: NbdServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.backend = server.backend
        self.proto = NbdServerProtocol(server.export)
        self.reader, self.writer = reader, writer
        self.admission = _Admission(server.max_in_flight, server.max_in_flight_bytes)
        self.tasks: set[asyncio.Task[None]] = set()
        self._pending: list[bytes] = []  # replies written at the end of this loop iteration

    async def run(self) -> None:
        try:
            await self._serve()
        except NbdProtocolError as exc:
            log.warning("nbd: closing connection: %s", exc)
        except ConnectionError as exc:
            log.info("nbd: connection lost: %s", exc)
        finally:
            # proto.md Terminating the transmission phase: finish what is in flight first.
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            self._flush()
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()

    def _write(self, data: bytes) -> None:
        """Small replies are queued, and all queued in one loop iteration go out in one
        send(): replies that complete together cost one syscall. Large ones go at once."""
        if len(data) >= CORK_MAX:
            self._flush()
            self._pending.append(data)
            self._flush()
        elif data:
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self.writer.is_closing():
            self.writer.write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def _serve(self) -> None:
        proto = self.proto
        while True:
            event = proto.next_event()
            self._write(proto.data_to_send())
            if event is NEED_DATA:
                await self.writer.drain()
                proto.receive_data(await self.reader.read(READ_CHUNK))
            elif isinstance(event, Request):
                await self._dispatch(event)
            elif isinstance(event, RequestRejected):
                log.debug("nbd: rejected request %#x: %s", event.handle, event.reason)
                self._write(proto.send(Reply(event.handle, event.error)))
            elif isinstance(event, TransmissionStarted):
                log.debug("nbd: export %r, flags %s", event.export_name, event.flags)
            else:  # Disconnect, ConnectionClosed
                return

    async def _dispatch(self, request: Request) -> None:
        cost = request.length if request.command == NbdCmd.NBD_CMD_READ else len(request.data)
        await self.admission.acquire(cost)
        task = asyncio.create_task(self._execute(request, cost))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _execute(self, request: Request, cost: int) -> None:
        try:
            try:
                reply = await execute(self.backend, request)
            except Exception:
                log.exception("nbd: backend failed on %s", request.command.name)
                reply = Reply(request.handle, NbdError.NBD_EIO)
            self._write(self.proto.send(reply))
            await self.writer.drain()
        except ConnectionError:
            pass  # the read loop sees the closed connection too
        finally:
            await self.admission.release(cost)


class NbdServer:
    """Serves ``backend`` as one NBD export (named ``export_name``; the empty name, the
    default export, selects it too) to any number of clients, up to ``max_connections``.

    Use as ``async with NbdServer(backend) as server: await server.start_unix(path)``;
    leaving the block closes listeners and connections and removes the socket files.
    """

    def __init__(
        self,
        backend: BlockBackend,
        *,
        export_name: str = "",
        description: str = "",
        max_in_flight: int = 32,
        max_in_flight_bytes: int = 64 << 20,
        max_connections: int = 16,
    ) -> None:
        self.backend = backend
        self.export = export_info(backend, export_name, description)
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = max_in_flight_bytes
        self.max_connections = max_connections
        self._listeners: list[asyncio.Server] = []
        self._unix_paths: list[Path] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start_unix(self, path: str | Path) -> Path:
        """Listen on a Unix socket at ``path`` (a stale socket left there is replaced)."""
        path = Path(path)
        _claim_socket_path(path)
        listener = await asyncio.start_unix_server(self._accept, path=str(path), limit=READ_CHUNK)
        self._listeners.append(listener)
        self._unix_paths.append(path)
        return path

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on TCP (loopback unless told otherwise); returns the port bound."""
        listener = await asyncio.start_server(self._accept, host, port, limit=READ_CHUNK)
        self._listeners.append(listener)
        bound: int = listener.sockets[0].getsockname()[1]
        return bound

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            log.warning("nbd: refusing a connection: %d already open", len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        try:
            await _Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            # close() cancelled us. Ending normally keeps asyncio's stream callback from
            # calling exception() on a cancelled task (which raises on Python 3.11).
            if not self._closing:
                raise
        finally:
            self._connections.discard(task)

    async def close(self) -> None:
        """Stop listening, end every connection (in-flight requests finish), remove sockets."""
        self._closing = True
        for listener in self._listeners:
            listener.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._unix_paths.clear()

    async def __aenter__(self) -> NbdServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _claim_socket_path(path: Path) -> None:
    """Remove a socket nobody listens on any more; refuse anything else already at ``path``."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "not a socket, will not replace it", str(path))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        path.unlink()
        return
    finally:
        probe.close()
    raise FileExistsError(errno.EADDRINUSE, "a server is listening there", str(path))
