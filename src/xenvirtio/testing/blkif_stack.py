"""A blkif stack on an emu host, for tests and benchmarks:

    image -> blkback (dom0, its own reactor thread) -> ring + grants + event channels ->
    blkfront (acting as domain ``domid`` through ``attach_guest``) -> NbdServer

The frontend and the NBD server run on one event loop thread the stack owns; the
backend on the runner's thread. ``serve_nbd(path)`` returns the NBD URI.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from xenvirtio.devices.blkif.backend import BlkbackConfig, BlkifBackendRunner
from xenvirtio.drivers.blkif.frontend import BlkfrontConfig, BlkifFrontend
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu import open_emu
from xenvirtio.hv.emu.guest import EmuGuest, attach_guest
from xenvirtio.hv.xenbus.paths import BackendPath
from xenvirtio.hv.xenbus.toolstack import create_device, remove_device
from xenvirtio.nbd.server import NbdServer

R = TypeVar("R")


class BlkifStack:
    """``with BlkifStack(run_dir, image) as s: s.run(s.front.read(0, 4096))``."""

    def __init__(
        self,
        run_dir: Path,
        image: Path,
        *,
        front: BlkfrontConfig | None = None,
        back: BlkbackConfig | None = None,
        devid: int = 0,
        runner: BlkifBackendRunner | None = None,
        dom0: Hypervisor | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.image = image
        self.front_config = front or BlkfrontConfig()
        self.back_config = back or BlkbackConfig()
        self.devid = devid
        self.dom0 = dom0
        self._own_dom0 = dom0 is None
        self.runner = runner
        self._own_runner = runner is None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="blkfront")
        self.domid = -1
        self.guest: EmuGuest | None = None
        self.backend: BackendPath | None = None
        self._front: BlkifFrontend | None = None
        self._servers: list[NbdServer] = []

    @property
    def front(self) -> BlkifFrontend:
        assert self._front is not None
        return self._front

    def run(self, coro: Coroutine[Any, Any, R], timeout: float = 60.0) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> BlkifStack:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        if self.dom0 is None:
            self.dom0 = open_emu(self.run_dir)
        assert self.dom0.store is not None
        if self.runner is None:
            self.runner = BlkifBackendRunner(self.dom0)
            self.runner.start_thread(0.02)
        self.domid = self.dom0.domctl.create(32, name=f"blkif-{id(self):x}")
        _, self.backend = create_device(self.dom0.store, 0, self.domid, "vbd", self.devid)
        self.runner.add(str(self.backend), self.image, self.back_config)
        self.guest = attach_guest(self.run_dir, self.domid)
        self._thread.start()

        async def start() -> BlkifFrontend:
            assert self.guest is not None
            front = BlkifFrontend(self.guest, self.devid, self.front_config)
            await front.start()
            return front

        self._front = self.run(start())

    def serve_nbd(self, path: Path) -> str:
        async def start() -> None:
            server = NbdServer(self.front)
            await server.start_unix(path)
            self._servers.append(server)

        self.run(start())
        return f"nbd+unix:///?socket={path}"

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                for server in self._servers:
                    self.run(server.close())
                if self._front is not None:
                    front = self._front

                    async def close() -> None:
                        front.close()

                    self.run(close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()
        if self.runner is not None and self.backend is not None:
            with contextlib.suppress(Exception):
                self.runner.remove(str(self.backend))
        if self._own_runner and self.runner is not None:
            self.runner.close()
        if self.guest is not None:
            self.guest.close()
        if self.dom0 is not None:
            if self.backend is not None and self.dom0.store is not None:
                with contextlib.suppress(OSError):
                    remove_device(self.dom0.store, self.backend)
            if self.domid >= 0:
                with contextlib.suppress(OSError):
                    self.dom0.domctl.destroy(self.domid)
            if self._own_dom0:
                self.dom0.close()
