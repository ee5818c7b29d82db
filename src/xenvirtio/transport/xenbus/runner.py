"""`BackendRunner`: many virtio backends on one reactor and one XenStore connection.

    runner = BackendRunner(hv)                        # dom0 or a driver domain
    runner.add("/local/domain/0/backend/virtio/5/0", EchoDevice())
    while True:
        runner.run_once(1.0)                          # or: await runner.serve()

Each backend gets its own event channel handle (its kicks, its ports) and, per
connection, its own gnttab handle; they share the reactor thread. A frontend that
breaks the protocol fails its own device; the others keep being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Future

from xenvirtio.hv.api import Hypervisor
from xenvirtio.transport.api import VirtioDevice
from xenvirtio.transport.xenbus.backend import DEFAULT_MAX_MAPPED_PAGES, XenbusVirtioBackend
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.store import ReactorStore
from xenvirtio.xenstore.client import XenstoreClient

log = logging.getLogger("xenvirtio.xenbus.virtio")


class BackendRunner:
    """Serves backends added with `add`; drive it with `run_once` or `serve`."""

    def __init__(self, hv: Hypervisor, store: XenstoreClient | None = None) -> None:
        client = store if store is not None else hv.store
        if client is None:
            raise ValueError("the backend needs a XenStore connection")
        self.hv = hv
        self.reactor = Reactor()
        self.store = ReactorStore(client, self.reactor)
        self.reactor.watch_handler = self._on_watch
        self.reactor.on_idle(self._flush)
        self.backends: dict[str, XenbusVirtioBackend] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(
        self,
        nodename: str,
        device: VirtioDevice,
        *,
        grant_usage: bool = True,
        max_mapped_pages: int = DEFAULT_MAX_MAPPED_PAGES,
    ) -> XenbusVirtioBackend:
        """Serve ``device`` at backend directory ``nodename`` (created by a toolstack).
        With a serving thread, the backend starts on that thread."""
        if self._thread is None:
            return self._add(nodename, device, grant_usage, max_mapped_pages)
        done: Future[XenbusVirtioBackend] = Future()

        def run() -> None:
            try:
                done.set_result(self._add(nodename, device, grant_usage, max_mapped_pages))
            except BaseException as exc:
                done.set_exception(exc)

        self.reactor.call_soon(run)
        return done.result(timeout=30)

    def _add(
        self,
        nodename: str,
        device: VirtioDevice,
        grant_usage: bool,
        max_mapped_pages: int,
    ) -> XenbusVirtioBackend:
        if nodename in self.backends:
            raise ValueError(f"{nodename} is already served")
        backend = XenbusVirtioBackend(
            self.hv,
            self.store,
            nodename,
            device,
            grant_usage=grant_usage,
            max_mapped_pages=max_mapped_pages,
        )
        self.backends[nodename] = backend
        try:
            backend.start()
        except BaseException:
            self.backends.pop(nodename)
            backend.close()
            raise
        return backend

    def remove(self, nodename: str) -> None:
        backend = self.backends.pop(nodename, None)
        if backend is not None:
            backend.close()

    def _on_watch(self, path: str, token: str) -> None:
        for backend in list(self.backends.values()):
            if backend.handle_watch(path, token):
                break
        for name, backend in list(self.backends.items()):
            if backend.removed:
                log.info("%s: removed", name)
                self.remove(name)

    def _flush(self) -> None:
        for backend in list(self.backends.values()):
            backend.flush()

    def run_once(self, timeout: float | None = 0.0) -> bool:
        return self.reactor.run_once(timeout)

    async def serve(self) -> None:
        """Serve from the running asyncio loop until cancelled."""
        self.reactor.attach()
        try:
            await asyncio.Event().wait()
        finally:
            self.reactor.detach()

    def start_thread(self, interval: float = 0.05) -> None:
        """Serve on a background thread (tests, simple tools) until `close`."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                self.reactor.run_once(interval)

        self._thread = threading.Thread(target=loop, name="xenbus-virtio", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self.reactor.wake()
            self._thread.join(timeout=10)
            self._thread = None
        for name in list(self.backends):
            with contextlib.suppress(Exception):
                self.remove(name)
        self.reactor.close()
