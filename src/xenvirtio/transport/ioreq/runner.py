"""`HostThread`: a `DeviceModelHost` on an event loop thread of its own, so blocking
code (a toolstack, a test) can run a device model beside it. ``call`` runs a function
on the loop thread and returns its result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

from xenvirtio.hv.api.hypervisor import Hypervisor
from xenvirtio.transport.ioreq.host import DeviceModelHost

R = TypeVar("R")


class HostThread:
    """``with HostThread(hv) as dm: guest = dm.call(dm.host.add_guest, domid)``.

    ``hv`` is used from the loop thread only, from now on; `close` leaves it open."""

    def __init__(self, hv: Hypervisor, *, name: str = "ioreq-device-model") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()
        try:
            self.host: DeviceModelHost = self.call(DeviceModelHost, hv, self.loop)
        except BaseException:
            self._stop()
            raise

    def call(self, fn: Callable[..., R], *args: object, timeout: float = 30.0) -> R:
        """``fn(*args)`` on the loop thread; its result or exception."""
        future: Future[R] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()

    def close(self) -> None:
        """Stop serving every guest, then stop the loop thread."""
        try:
            if self._thread.is_alive():
                self.call(self.host.close)
        finally:
            self._stop()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> HostThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
