"""The asyncio XenStore client: the blocking client's API, with ``await``.

    async with await XenstoreClient.connect() as xs:
        await xs.write("/vm/name", "demo")
        async with xs.transaction() as t:
            await t.write("/vm/state", "running")
        await xs.watch("/vm", "tok")
        async for path, token in xs.watch_events(timeout=1.0):
            ...

Any number of tasks may issue requests concurrently; they are pipelined on the one
connection and matched by request id. Use the client from the loop it was created on.
A watch callback (plain function or coroutine function) runs on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from xenvirtio.xenstore import client_protocol as ops
from xenvirtio.xenstore.channel import (
    Backend,
    RingBackend,
    RingChannel,
    SocketBackend,
    default_socket_path,
)
from xenvirtio.xenstore.client_protocol import (
    ClientProtocol,
    ProtocolError,
    Request,
    WatchEvent,
    XenstoreError,
)
from xenvirtio.xenstore.operations import AsyncOperations
from xenvirtio.xenstore.ring import RingError, Role

T = TypeVar("T")
WatchCallback = Callable[[str, str], object] | Callable[[str, str], Awaitable[object]]
DEFAULT_RETRIES = 16


class XenstoreClient(AsyncOperations):
    """One connection to a XenStore daemon, driven by the running event loop."""

    def __init__(self, backend: Backend, loop: asyncio.AbstractEventLoop) -> None:
        self._backend = backend
        self._loop = loop
        self._fd = backend.fileno()
        self._proto = ClientProtocol()
        self._waiters: dict[int, tuple[asyncio.Future[Any], Request[Any]]] = {}
        self._out = bytearray()
        self._writing = False
        self._error: BaseException | None = None
        self._events: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._callbacks: dict[str, WatchCallback] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        loop.add_reader(self._fd, self._on_readable)

    @classmethod
    async def connect(cls, path: str | None = None) -> XenstoreClient:
        """Connect to the daemon's socket (default ``$XENSTORED_PATH``, then Xen's)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, path or default_socket_path())
        except BaseException:
            sock.close()
            raise
        return cls(SocketBackend(sock), loop)

    @classmethod
    async def over_ring(cls, channel: RingChannel) -> XenstoreClient:
        """Talk to the daemon through a domain's xenstore ring (the domain's end)."""
        client = cls(RingBackend(channel, Role.CLIENT), asyncio.get_running_loop())
        client._loop.call_soon(client._on_readable)  # replies that arrived before us
        return client

    async def __aenter__(self) -> XenstoreClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._error is None:
            self._fail(ConnectionError("client closed"))
        for task in list(self._tasks):
            task.cancel()

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        self._backend.close()
        for future, _request in self._waiters.values():
            if not future.done():
                future.set_exception(ConnectionError(f"xenstore connection lost: {exc}"))
        self._waiters.clear()
        self._events.put_nowait(WatchEvent("", ""))  # wakes watch_events(); it re-checks

    # --- requests --------------------------------------------------------------------

    async def _call(self, request: Request[T], tx: int = 0) -> T:
        if self._error is not None:
            raise ConnectionError(f"xenstore connection unusable: {self._error}")
        req_id, data = self._proto.send(request, tx)
        future: asyncio.Future[T] = self._loop.create_future()
        self._waiters[req_id] = (future, request)
        self._out += data
        self._flush()
        try:
            return await future
        finally:
            if self._waiters.pop(req_id, None) is not None:
                self._proto.forget(req_id)

    async def get_domain_path(self, domid: int) -> str:
        return await self._call(ops.get_domain_path(domid))

    async def introduce(self, domid: int, gfn: int, port: int) -> None:
        await self._call(ops.introduce(domid, gfn, port))

    async def release(self, domid: int) -> None:
        await self._call(ops.release(domid))

    async def resume(self, domid: int) -> None:
        await self._call(ops.resume(domid))

    async def is_domain_introduced(self, domid: int) -> bool:
        return await self._call(ops.is_domain_introduced(domid))

    async def set_target(self, domid: int, target: int) -> None:
        await self._call(ops.set_target(domid, target))

    async def reset_watches(self) -> None:
        await self._call(ops.reset_watches())

    async def control(self, *args: str | bytes) -> bytes:
        return await self._call(ops.control(*args))

    # --- transactions ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Committed when the block ends (EAGAIN on conflict), aborted if it raises."""
        tx_id = await self._call(ops.transaction_start())
        t = Transaction(self, tx_id)
        try:
            yield t
        except BaseException:
            with contextlib.suppress(XenstoreError, ConnectionError):
                await self._call(ops.transaction_end(False), tx_id)
            raise
        await self._call(ops.transaction_end(True), tx_id)

    async def run_transaction(
        self, fn: Callable[[Transaction], Awaitable[T]], retries: int = DEFAULT_RETRIES
    ) -> T:
        """Run ``await fn(t)`` in a transaction, again (up to ``retries`` times) on EAGAIN."""
        for attempt in range(retries + 1):
            try:
                async with self.transaction() as t:
                    result = await fn(t)
                return result
            except XenstoreError as exc:
                if exc.name != "EAGAIN" or attempt == retries:
                    raise
                await asyncio.sleep(random.uniform(0, 0.001 * (attempt + 1)))
        raise AssertionError("unreachable")

    # --- watches ---------------------------------------------------------------------

    async def watch(self, path: str, token: str, callback: WatchCallback | None = None) -> None:
        """Watch ``path``; events carry ``token``; with ``callback``, it gets them."""
        if callback is not None:
            self._callbacks[token] = callback
        try:
            await self._call(ops.watch(path, token))
        except BaseException:
            self._callbacks.pop(token, None)
            raise

    async def unwatch(self, path: str, token: str) -> None:
        await self._call(ops.unwatch(path, token))
        self._callbacks.pop(token, None)

    async def watch_events(self, timeout: float | None = None) -> AsyncIterator[tuple[str, str]]:
        """Yield ``(path, token)`` as events arrive; stop after ``timeout`` s without one."""
        while True:
            if self._error is not None and self._events.empty():
                raise ConnectionError(f"xenstore connection unusable: {self._error}")
            try:
                event = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                return
            if event.token or event.path:
                yield event.path, event.token

    def _deliver(self, event: WatchEvent) -> None:
        callback = self._callbacks.get(event.token)
        if callback is None:
            self._events.put_nowait(event)
            return
        result = callback(event.path, event.token)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- I/O -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._error is not None:
            return
        try:
            data = self._backend.recv()
            events, replies = self._proto.receive(data) if data else ([], [])
            self._flush()
        except (EOFError, OSError, RingError, ProtocolError) as exc:
            self._fail(exc)
            return
        for req_id in replies:
            waiter = self._waiters.pop(req_id, None)
            if waiter is None:
                continue
            future, request = waiter
            try:
                result = self._proto.take_reply(req_id, request)
            except (XenstoreError, ProtocolError) as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
        for event in events:
            self._deliver(event)

    def _flush(self) -> None:
        if self._error is not None:
            return
        out = self._out
        if out:
            try:
                n = self._backend.send(out)
            except (EOFError, OSError, RingError) as exc:
                self._fail(exc)
                return
            del out[:n]
        self._backend.kick()
        want = bool(out) and not self._backend.is_ring
        if want != self._writing:
            self._writing = want
            if want:
                self._loop.add_writer(self._fd, self._flush)
            else:
                self._loop.remove_writer(self._fd)


class Transaction(AsyncOperations):
    """The operations of an asyncio client, inside one transaction."""

    def __init__(self, client: XenstoreClient, tx_id: int) -> None:
        self.client = client
        self.id = tx_id

    async def _call(self, request: Request[T], tx: int = 0) -> T:
        return await self.client._call(request, self.id)


AsyncXenstoreClient = XenstoreClient

__all__ = ["AsyncXenstoreClient", "Transaction", "XenstoreClient", "XenstoreError"]
