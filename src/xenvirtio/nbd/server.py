"""An asyncio NBD server: one :class:`BlockBackend` exported on Unix and/or loopback TCP sockets.

Each connection runs :class:`~xenvirtio.nbd.protocol.NbdServerProtocol`. Requests are read
continuously and executed concurrently (reads and writes on a `DirectBackend` without a task
each); each reply is written as soon as its request completes (out of order, matched by
handle), read data straight from the backend's buffer. A connection admits at most ``max_in_flight``
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
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

from xenvirtio.nbd.backend import BlockBackend, BlockIOError, DirectBackend
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
from xenvirtio.nbd.protocol import NbdServerProtocol, nbd_error
from xenvirtio.spec.nbd import NBD_DEFAULT_PREFERRED_BLOCK, NbdCmd, NbdError

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
CORK_MAX = 64 * 1024  # replies this large are written at once, not gathered
SOCKET_BUFFER = 4 << 20  # SO_SNDBUF asked for (the kernel caps it at net.core.wmem_max)


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


def _cost(request: Request) -> int:
    return request.length if request.command == NbdCmd.NBD_CMD_READ else len(request.data)


class _Connection(asyncio.BufferedProtocol):
    """One client. The socket is read straight into a buffer of ours and fed to the
    state machine; requests start as they are parsed (on a `DirectBackend` without a
    task each) and replies go out as they complete, gathered per loop iteration.

    Admission (requests and payload bytes in flight) and write backpressure both stop
    the parsing and pause reading, which pushes back on the client."""

    def __init__(self, server: NbdServer) -> None:
        self.server = server
        self.backend = server.backend
        self.direct = cast(DirectBackend, server.backend) if _is_direct(server.backend) else None
        self.proto = NbdServerProtocol(server.export)
        self.transport: asyncio.Transport | None = None
        self._rbuf = memoryview(bytearray(READ_CHUNK))
        self._max_requests, self._max_bytes = server.max_in_flight, server.max_in_flight_bytes
        self._requests = self._bytes = 0
        self._held: Request | None = None  # parsed, waiting for admission
        self._write_paused = self._reading_paused = self._ending = self._lost = False
        self._pending: list[bytes] = []  # replies gathered this iteration
        self.tasks: set[asyncio.Task[None]] = set()
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ---------------------------------------------------------------- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.server.admit(self):
            log.warning("nbd: refusing a connection: %d already open", self.server.connections)
            self.transport.abort()
            return
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            # Room for a queue depth's worth of large read replies: with the default
            # (~200 KiB) most 128 KiB replies only half fit and the rest is copied.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self._write(self.proto.data_to_send())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self._feed(self._rbuf[:nbytes])

    def eof_received(self) -> bool:
        self._feed(b"")
        return True  # keep the transport: in-flight replies still go out

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.info("nbd: connection lost: %s", exc)
        self._ending = self._lost = True
        self._pending.clear()
        self._check_finished()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump()

    # ---------------------------------------------------------------- requests in
    def _feed(self, data: bytes | memoryview) -> None:
        if self._ending:
            return
        self.proto.receive_data(data)
        self._pump()

    def _pump(self) -> None:
        """Turn buffered bytes into requests while admission and the writer allow."""
        proto = self.proto
        try:
            while not self._ending:
                if self._held is not None and not self._admit(self._held):
                    return self._pause_reading()
                if self._write_paused:
                    return self._pause_reading()
                event = proto.next_event()
                self._write(proto.data_to_send())
                if event is NEED_DATA:
                    return self._resume_reading()
                if isinstance(event, Request):
                    self._held = event
                elif isinstance(event, RequestRejected):
                    log.debug("nbd: rejected request %#x: %s", event.handle, event.reason)
                    self._write(proto.send(Reply(event.handle, event.error)))
                elif isinstance(event, TransmissionStarted):
                    log.debug("nbd: export %r, flags %s", event.export_name, event.flags)
                else:  # Disconnect, ConnectionClosed
                    self._end()
        except NbdProtocolError as exc:
            log.warning("nbd: closing connection: %s", exc)
            self._end()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _admit(self, request: Request) -> bool:
        """Start ``request`` if it fits the connection's bounds."""
        cost = _cost(request)
        if self._requests >= self._max_requests or (
            self._requests and self._bytes + cost > self._max_bytes
        ):
            return False
        self._held = None
        self._requests += 1
        self._bytes += cost
        self._start(request, cost)
        return True

    def _release(self, cost: int) -> None:
        self._requests -= 1
        self._bytes -= cost
        if self._held is not None:
            self._pump()
        self._check_finished()

    # ---------------------------------------------------------------- execution
    def _start(self, request: Request, cost: int) -> None:
        direct, command = self.direct, request.command
        if direct is not None and request.length:
            if command == NbdCmd.NBD_CMD_READ:
                done = partial(self._read_done, request, cost)
                direct.submit_read(request.offset, request.length, done)
                return
            if command == NbdCmd.NBD_CMD_WRITE:
                wrote = partial(self._write_done, request, cost)
                direct.submit_write(request.offset, request.data, request.fua, wrote)
                return
        task = asyncio.create_task(self._execute(request, cost))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _read_done(
        self,
        request: Request,
        cost: int,
        data: memoryview | BlockIOError,
        release: Callable[[], None],
    ) -> None:
        try:
            if isinstance(data, BlockIOError):
                self._write(self.proto.reply_header(request.handle, nbd_error(data.errno), 0))
            else:
                header = self.proto.reply_header(request.handle, None, request.length)
                self._write_data(header, data)
        finally:
            release()
            self._release(cost)

    def _write_done(self, request: Request, cost: int, error: BlockIOError | None) -> None:
        nbd = None if error is None else nbd_error(error.errno)
        self._write(self.proto.reply_header(request.handle, nbd, 0))
        self._release(cost)

    async def _execute(self, request: Request, cost: int) -> None:
        try:
            try:
                reply = await execute(self.backend, request)
            except Exception:
                log.exception("nbd: backend failed on %s", request.command.name)
                reply = Reply(request.handle, NbdError.NBD_EIO)
            self._write(self.proto.send(reply))
        finally:
            self._release(cost)

    # ---------------------------------------------------------------- replies out
    def _write(self, data: bytes) -> None:
        """Small replies are gathered and all of one loop iteration go out in one send():
        replies that complete together cost one syscall. Large ones go at once (the
        transport sends them straight from ``data`` or copies what the socket refused)."""
        size = len(data)
        if not size or self._lost:
            return
        if size >= CORK_MAX:
            self._flush()
            self.transport.write(data)  # type: ignore[union-attr]
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(data)

    def _write_data(self, header: bytes, data: memoryview) -> None:
        """A read reply whose data lives in memory released right after this returns:
        the data is sent (one writev, no copy) or copied, never kept by reference."""
        transport = self.transport
        if self._lost or transport is None or transport.is_closing():
            return
        if len(data) < CORK_MAX:
            self._write(header)
            self._write(bytes(data))
            return
        self._flush()
        sent = 0
        if not transport.get_write_buffer_size():  # nothing queued: straight to the socket
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sent = os.writev(transport.get_extra_info("socket").fileno(), [header, data])
        if sent < len(header):
            transport.write(header[sent:])
            sent = len(header)
        if sent < len(header) + len(data):
            transport.write(bytes(data[sent - len(header) :]))  # the transport keeps a copy

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        transport = self.transport
        if pending and transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    # ---------------------------------------------------------------- ending
    def _end(self) -> None:
        """proto.md Terminating the transmission phase: stop reading, answer what is in
        flight, then close."""
        if not self._ending:
            self._ending = True
            self._held = None
            if self.transport is not None and not self.transport.is_closing():
                self._reading_paused = False
                with contextlib.suppress(RuntimeError):
                    self.transport.pause_reading()
        self._check_finished()

    def _check_finished(self) -> None:
        if not self._ending or self._requests or self.finished.done():
            return
        self._flush()  # replies still gathered go out before the close
        if self.transport is not None:
            self.transport.close()
        self.finished.set_result(None)
        self.server.forget(self)

    def close(self) -> None:
        """Server shutdown: like a disconnect, in-flight requests finish first."""
        self._end()


def _is_direct(backend: BlockBackend) -> bool:
    return callable(getattr(backend, "submit_read", None)) and callable(
        getattr(backend, "submit_write", None)
    )


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
        self._connections: set[_Connection] = set()
        self._closing = False

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start_unix(self, path: str | Path) -> Path:
        """Listen on a Unix socket at ``path`` (a stale socket left there is replaced)."""
        path = Path(path)
        _claim_socket_path(path)
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(lambda: _Connection(self), path=str(path))
        self._listeners.append(listener)
        self._unix_paths.append(path)
        return path

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on TCP (loopback unless told otherwise); returns the port bound."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: _Connection(self), host, port)
        self._listeners.append(listener)
        bound: int = listener.sockets[0].getsockname()[1]
        return bound

    def admit(self, conn: _Connection) -> bool:
        """A new connection: False (close it) when the server is full or closing."""
        if self._closing or len(self._connections) >= self.max_connections:
            return False
        self._connections.add(conn)
        return True

    def forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    async def close(self) -> None:
        """Stop listening, end every connection (in-flight requests finish), remove sockets."""
        self._closing = True
        for listener in self._listeners:
            listener.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        if connections:
            await asyncio.gather(*(c.finished for c in connections), return_exceptions=True)
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
