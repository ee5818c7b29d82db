"""The blocking XenStore client, over the daemon's unix socket or a domain's ring.

    with XenstoreClient.connect() as xs:            # $XENSTORED_PATH or Xen's default
        xs.write("/vm/name", "demo")
        with xs.transaction() as t:                  # commits at exit; EAGAIN on conflict
            t.write("/vm/state", t.read("/vm/name") + b"-running")
        xs.watch("/vm", "tok")
        for path, token in xs.watch_events(timeout=1.0):
            ...

Threads: every method may be called from any thread. Requests from several threads are
pipelined on the one connection; whichever waiting thread finds the connection idle
reads it for everybody (leader/follower, so a lone thread never hands off to another).
Watch events go to ``watch_events()`` (one consumer at a time) or, for watches
registered with a callback, to a "xenstore-watch" thread the client starts on the first
such watch; a callback runs there, may issue requests, and should not block for long.
After ``close()`` or a broken connection every call raises ``ConnectionError``.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

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
from xenvirtio.xenstore.operations import Operations
from xenvirtio.xenstore.ring import RingError, Role

T = TypeVar("T")
WatchCallback = Callable[[str, str], object]
DEFAULT_RETRIES = 16


class XenstoreClient(Operations):
    """One connection to a XenStore daemon."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._proto = ClientProtocol()
        self._cond = threading.Condition()
        self._out = bytearray()
        self._reading = False
        self._error: BaseException | None = None
        self._closed = False
        self._events: deque[WatchEvent] = deque()
        self._callback_events: deque[WatchEvent] = deque()
        self._callbacks: dict[str, WatchCallback] = {}
        self._callback_thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._poll_events = select.POLLIN
        self._poller.register(backend.fileno(), self._poll_events)

    @classmethod
    def connect(cls, path: str | None = None) -> XenstoreClient:
        """Connect to the daemon's socket (default ``$XENSTORED_PATH``, then Xen's)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path or default_socket_path())
        except BaseException:
            sock.close()
            raise
        return cls(SocketBackend(sock, blocking_reads=True))

    @classmethod
    def over_ring(cls, channel: RingChannel) -> XenstoreClient:
        """Talk to the daemon through a domain's xenstore ring (the domain's end)."""
        return cls(RingBackend(channel, Role.CLIENT))

    def __enter__(self) -> XenstoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; waiting calls in other threads get ConnectionError."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._error = self._error or ConnectionError("client closed")
            os.write(self._wake_w, b"x")
            if isinstance(self._backend, SocketBackend):
                self._backend.shutdown()
            self._cond.notify_all()
            while self._reading:
                self._cond.wait(1.0)
            self._backend.close()
        thread = self._callback_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- requests --------------------------------------------------------------------

    def _call(self, request: Request[T], tx: int = 0) -> T:
        with self._cond:
            self._raise_if_broken()
            req_id, data = self._proto.send(request, tx)
            try:
                self._out += data
                self._send_locked()
                self._wait_locked(lambda: self._proto.has_reply(req_id), None)
            except BaseException:
                self._proto.forget(req_id)
                raise
            return self._proto.take_reply(req_id, request)

    def get_domain_path(self, domid: int) -> str:
        return self._call(ops.get_domain_path(domid))

    def introduce(self, domid: int, gfn: int, port: int) -> None:
        self._call(ops.introduce(domid, gfn, port))

    def release(self, domid: int) -> None:
        self._call(ops.release(domid))

    def resume(self, domid: int) -> None:
        self._call(ops.resume(domid))

    def is_domain_introduced(self, domid: int) -> bool:
        return self._call(ops.is_domain_introduced(domid))

    def set_target(self, domid: int, target: int) -> None:
        self._call(ops.set_target(domid, target))

    def reset_watches(self) -> None:
        self._call(ops.reset_watches())

    def control(self, *args: str | bytes) -> bytes:
        return self._call(ops.control(*args))

    # --- transactions ----------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction committed when the block ends, aborted if it raises.

        The commit raises ``XenstoreError`` named ``EAGAIN`` if another connection
        changed what the transaction touched; see :meth:`run_transaction`.
        """
        tx_id = self._call(ops.transaction_start())
        t = Transaction(self, tx_id)
        try:
            yield t
        except BaseException:
            with contextlib.suppress(XenstoreError, ConnectionError):
                self._call(ops.transaction_end(False), tx_id)
            raise
        self._call(ops.transaction_end(True), tx_id)

    def run_transaction(self, fn: Callable[[Transaction], T], retries: int = DEFAULT_RETRIES) -> T:
        """Run ``fn(t)`` in a transaction, again (up to ``retries`` times) on EAGAIN."""
        for attempt in range(retries + 1):
            try:
                with self.transaction() as t:
                    result = fn(t)
                return result
            except XenstoreError as exc:
                if exc.name != "EAGAIN" or attempt == retries:
                    raise
                time.sleep(0.0005 * (attempt + 1))
        raise AssertionError("unreachable")

    # --- watches ---------------------------------------------------------------------

    def watch(self, path: str, token: str, callback: WatchCallback | None = None) -> None:
        """Watch ``path``; events carry ``token``; with ``callback``, it gets them."""
        if callback is not None:
            with self._cond:
                self._callbacks[token] = callback
                self._start_callback_thread()
        try:
            self._call(ops.watch(path, token))
        except BaseException:
            if callback is not None:
                with self._cond:
                    self._callbacks.pop(token, None)
            raise

    def unwatch(self, path: str, token: str) -> None:
        self._call(ops.unwatch(path, token))
        with self._cond:
            self._callbacks.pop(token, None)

    def watch_events(self, timeout: float | None = None) -> Iterator[tuple[str, str]]:
        """Yield ``(path, token)`` as events arrive; stop after ``timeout`` s without one."""
        while True:
            with self._cond:
                deadline = None if timeout is None else time.monotonic() + timeout
                if not self._wait_locked(lambda: bool(self._events), deadline):
                    return
                event = self._events.popleft()
            yield event.path, event.token

    def _start_callback_thread(self) -> None:
        if self._callback_thread is None:
            self._callback_thread = threading.Thread(
                target=self._callback_loop, name="xenstore-watch", daemon=True
            )
            self._callback_thread.start()

    def _callback_loop(self) -> None:
        while True:
            with self._cond:
                try:
                    self._wait_locked(lambda: bool(self._callback_events), None)
                except ConnectionError:
                    return
                event = self._callback_events.popleft()
                callback = self._callbacks.get(event.token)
            if callback is not None:
                callback(event.path, event.token)

    # --- the pump (called with self._cond held) ---------------------------------------

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise ConnectionError(f"xenstore connection unusable: {self._error}")

    def _wait_locked(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Wait until ``ready()``; read the connection ourselves if nobody else does."""
        while not ready():
            self._raise_if_broken()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._reading:
                self._cond.wait(remaining)
                continue
            self._reading = True
            try:
                self._cond.release()
                try:
                    data = self._read_unlocked(remaining)
                finally:
                    self._cond.acquire()
                if not self._closed:
                    self._pump_locked(data)
            except (EOFError, OSError, RingError, ProtocolError) as exc:
                self._error = self._error or exc
                raise ConnectionError(f"xenstore connection lost: {exc}") from exc
            finally:
                self._reading = False
                self._cond.notify_all()
        return True

    def _read_unlocked(self, timeout: float | None) -> bytes:
        """Wait for the transport (only the reading thread calls this) and take its bytes."""
        backend = self._backend
        if timeout is None and not self._out and isinstance(backend, SocketBackend):
            return backend.recv_blocking()  # the common case: one syscall, no poll
        events = select.POLLIN
        if self._out and not backend.is_ring:
            events |= select.POLLOUT
        if events != self._poll_events:
            self._poll_events = events
            self._poller.modify(backend.fileno(), events)
        self._poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
        if self._closed:
            return b""
        return backend.recv()

    def _pump_locked(self, data: bytes) -> None:
        if data:
            events, _replies = self._proto.receive(data)
            for event in events:
                if event.token in self._callbacks:
                    self._callback_events.append(event)
                else:
                    self._events.append(event)
        self._flush_locked()

    def _send_locked(self) -> None:
        """Flush; a socket that is full is waited on here, since the reading thread may
        sit in a blocking recv and not notice (a ring's reader flushes on every kick)."""
        self._flush_locked()
        backend = self._backend
        while self._out and self._reading and isinstance(backend, SocketBackend):
            self._cond.release()
            try:
                select.select([], [backend.fileno()], [], 0.1)
            finally:
                self._cond.acquire()
            self._raise_if_broken()
            self._flush_locked()

    def _flush_locked(self) -> None:
        try:
            if self._out:
                n = self._backend.send(self._out)
                del self._out[:n]
            self._backend.kick()
        except (EOFError, OSError, RingError) as exc:
            self._error = self._error or exc
            raise ConnectionError(f"xenstore connection lost: {exc}") from exc


class Transaction(Operations):
    """The operations of a client, inside one transaction (see ``transaction()``)."""

    def __init__(self, client: XenstoreClient, tx_id: int) -> None:
        self.client = client
        self.id = tx_id

    def _call(self, request: Request[T], tx: int = 0) -> T:
        return self.client._call(request, self.id)


__all__ = ["Transaction", "XenstoreClient", "XenstoreError"]
