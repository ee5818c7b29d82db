"""Run an :class:`NbdServer` on its own event loop in a background thread.

For callers that are not asyncio programs themselves: benchmarks driving external clients
(fio, nbdcopy) against an export, and tests. The loop, the server and the socket all live
and die inside the ``with`` block.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from xenvirtio.nbd.backend import BlockBackend
from xenvirtio.nbd.server import NbdServer


class ThreadedNbdServer:
    """``with ThreadedNbdServer(backend, path) as server:`` serves ``backend`` on the Unix
    socket ``path`` until the block ends; keyword arguments go to :class:`NbdServer`."""

    def __init__(self, backend: BlockBackend, path: str | Path, **server_args: Any) -> None:
        self.path = Path(path)
        self._backend = backend
        self._server_args = server_args
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nbd-server")
        self.server: NbdServer | None = None

    @property
    def uri(self) -> str:
        """The NBD URI of the export (the default export name)."""
        return f"nbd+unix:///?socket={self.path}"

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    async def _start(self) -> NbdServer:
        server = NbdServer(self._backend, **self._server_args)
        await server.start_unix(self.path)
        return server

    def __enter__(self) -> ThreadedNbdServer:
        self._thread.start()
        try:
            self.server = self.call(self._start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.server is not None:
                self.call(self.server.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
