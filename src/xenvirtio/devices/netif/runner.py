"""Many vif backends of this domain on one reactor (thread).

``runner = NetifBackendRunner(hv); runner.start_thread(); runner.add(be_dir, config)``.
Calls from other threads run on the reactor thread and wait for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from xenvirtio.devices.netif.backend import NetifBackend
from xenvirtio.devices.netif.vif import VifConfig
from xenvirtio.hv.api import Hypervisor
from xenvirtio.netif.netns import enter_netns
from xenvirtio.transport.xenbus.reactor import Reactor
from xenvirtio.transport.xenbus.store import ReactorStore

R = TypeVar("R")


class NetifBackendRunner:
    """The netback of one domain: every vif backend it serves, on one thread."""

    def __init__(self, hv: Hypervisor) -> None:
        assert hv.store is not None, "netback needs XenStore"
        self.hv = hv
        self.reactor = Reactor()
        self.store = ReactorStore(hv.store, self.reactor)
        self.reactor.watch_handler = self._on_watch
        self.backends: dict[str, NetifBackend] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, nodename: str, config: VifConfig | None = None) -> NetifBackend:
        def add() -> NetifBackend:
            be = NetifBackend(self.hv, self.store, self.reactor, nodename, config or VifConfig())
            self.backends[nodename] = be
            be.start()
            return be

        return self.call(add)

    def remove(self, nodename: str) -> None:
        def remove() -> None:
            be = self.backends.pop(nodename, None)
            if be is not None:
                be.close()

        self.call(remove)

    def _on_watch(self, path: str, token: str) -> None:
        for be in list(self.backends.values()):
            be.dev.handle_watch_event(path, token)

    def call(self, fn: Callable[[], R], timeout: float = 30.0) -> R:
        """``fn()`` on the reactor thread (directly when there is none yet)."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        self.reactor.call_soon(run)
        if not done.wait(timeout):
            raise TimeoutError("netback thread did not answer")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def start_thread(self, timeout: float = 0.05, netns: str | None = None) -> None:
        """Serve on a thread of its own; with ``netns`` that thread lives in that
        namespace, so vifs made with `VifConfig.netns` None are made there (netlink
        without a forked helper, which could signal an asyncio loop of this process)."""

        def loop() -> None:
            if netns is not None:
                enter_netns(netns)
            while not self._stop.is_set():
                self.reactor.run_once(timeout)

        self._thread = threading.Thread(target=loop, name="netback", daemon=True)
        self._thread.start()

    def close(self) -> None:
        for nodename in list(self.backends):
            self.remove(nodename)
        self._stop.set()
        if self._thread is not None:
            self.reactor.wake()
            self._thread.join(10)
            self._thread = None
        self.reactor.close()
