"""`Reactor`: XenStore watch events and event channel fds, delivered on one thread.

A blocking XenStore client hands watch events to a callback on its own watch thread;
event channels signal through a file descriptor. Both ends of the transport keep their
state on one thread, so the reactor queues watch events, wakes itself through an
eventfd and dispatches everything from `run_once` (blocking use, tests) or from an
asyncio loop (`attach`), which needs only the reactor's one epoll descriptor.

Call order: ``(register | unregister | watch_callback | wake)* (run_once | attach)*
close``. Callbacks run on the thread that called `run_once` (or the loop's thread) and
must not block for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
from collections import deque
from collections.abc import Callable

WatchHandler = Callable[[str, str], None]


class Reactor:
    """One epoll over the wake eventfd and any registered descriptors."""

    def __init__(self) -> None:
        self._epoll = select.epoll(flags=select.EPOLL_CLOEXEC)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._handlers: dict[int, Callable[[], None]] = {}
        self._watches: deque[tuple[str, str]] = deque()
        self._idle: list[Callable[[], None]] = []
        self._calls: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self.watch_handler: WatchHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def fileno(self) -> int:
        """Readable when `run_once` has something to do (for asyncio / selectors)."""
        return self._epoll.fileno()

    def register(self, fd: int, handler: Callable[[], None]) -> None:
        self._handlers[fd] = handler
        self._epoll.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def on_idle(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after every dispatch round (deferred work, e.g. config publishing)."""
        self._idle.append(fn)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the dispatching thread at the next round (any thread)."""
        with self._lock:
            self._calls.append(fn)
        self.wake()

    def watch_callback(self, path: str, token: str) -> None:
        """For ``XenstoreClient.watch(path, token, callback=...)``: any thread."""
        with self._lock:
            self._watches.append((path, token))
        self.wake()

    def wake(self) -> None:
        """Make `run_once` return soon (any thread)."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)

    def run_once(self, timeout: float | None = 0.0) -> bool:
        """Wait up to ``timeout`` seconds (None: forever) and dispatch what is ready;
        returns whether anything was."""
        if self.closed:
            return False
        try:
            ready = self._epoll.poll(-1 if timeout is None else timeout)
        except InterruptedError:
            ready = []
        return self._dispatch([fd for fd, _ in ready])

    def _dispatch(self, fds: list[int]) -> bool:
        did = False
        for fd in fds:
            if fd == self._wake:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._wake)
                continue
            handler = self._handlers.get(fd)
            if handler is not None:
                handler()
                did = True
        while True:
            with self._lock:
                call = self._calls.popleft() if self._calls else None
            if call is None:
                break
            call()
            did = True
        did = self._drain_watches() or did
        for fn in list(self._idle):
            fn()
        return did

    def _drain_watches(self) -> bool:
        did = False
        while True:
            with self._lock:
                if not self._watches:
                    return did
                path, token = self._watches.popleft()
            if self.watch_handler is not None:
                self.watch_handler(path, token)
            did = True

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Dispatch from an asyncio loop (the running one by default) from now on."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self.fileno(), self.run_once, 0.0)
        self.wake()

    def detach(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fileno())
            self._loop = None

    def close(self) -> None:
        if self.closed:
            return
        self.detach()
        self.closed = True
        self._epoll.close()
        os.close(self._wake)
