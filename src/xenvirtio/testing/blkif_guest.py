"""A PV guest whose disk is a blkif device: blkfront runs in the domain's own process
(an emu domain kernel) and exports the disk over NBD on a Unix socket dom0 can reach.

    with BlkifGuest(dom0, run_dir, socket) as guest:   # domain + vbd directories
        runner.add(str(guest.backend), image)          # or a `BlkbackProcess`
        guest.boot()                                   # unpause, wait until served
        run_fio(guest.uri, job)

Kernel (``kernel(guest, cmdline)``, JSON command line ``{"devid", "socket", "front"}``):
starts `BlkifFrontend` (``front``: `BlkfrontConfig` fields), serves it with
`NbdServer`, reports ``ready`` (size, queues, persistent) under
``/local/domain/<id>/data/ioreq/`` and then, while it serves, ``progress``
(``reconnects``, ``resubmitted``) whenever they change. dom0 writes ``stop`` there to
end it (the frontend closes, ``stopped`` is reported); a failure's traceback goes to
``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from xenvirtio.drivers.blkif.frontend import BlkfrontConfig, BlkifFrontend
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.api.guest import Guest
from xenvirtio.hv.xenbus.ops import read_optional
from xenvirtio.hv.xenbus.paths import BackendPath
from xenvirtio.hv.xenbus.toolstack import create_device, remove_device
from xenvirtio.nbd.server import NbdServer
from xenvirtio.testing.ioreq_guest import STORE_DIR, Report, run_reported

KERNEL = "xenvirtio.testing.blkif_guest:kernel"
STOP_KEY = "stop"
POLL = 0.1  # seconds between looks at the stop key


def kernel(guest: Guest, cmdline: str) -> int:
    args = json.loads(cmdline)
    return run_reported(guest, lambda report: asyncio.run(_serve(guest, args, report)))


async def _serve(guest: Guest, args: dict[str, Any], report: Report) -> None:
    front = BlkifFrontend(guest, int(args["devid"]), BlkfrontConfig(**args.get("front", {})))
    server: NbdServer | None = None
    try:
        await front.start(timeout=30)
        server = NbdServer(front, description="blkif disk")
        await server.start_unix(args["socket"])
        report.put("ready", {"size": front.size, "queues": len(front.queues),
                             "persistent": front.pages.persistent})  # fmt: skip
        seen: tuple[int, int] = (0, 0)
        while read_optional(report.store, f"{report.base}/{STOP_KEY}") is None:
            now = (front.reconnects, front.resubmitted)
            if now != seen:
                seen = now
                report.put("progress", {"reconnects": now[0], "resubmitted": now[1]})
            await asyncio.sleep(POLL)
    finally:
        if server is not None:
            await server.close()
        front.close()
    report.put("stopped", front.reconnects)


class GuestFailed(RuntimeError):
    """The domain's kernel reported an error (its traceback is the message)."""


class BlkifGuest:
    """A paused domain running `kernel`, with the vbd's directories made (``backend``)."""

    def __init__(
        self, hv: Hypervisor, run_dir: Path, socket: Path, *, devid: int = 0,
        front: BlkfrontConfig | None = None, memory_mb: int = 32,
    ) -> None:  # fmt: skip
        assert hv.store is not None
        self.hv, self.store, self.socket = hv, hv.store, socket
        line = {"devid": devid, "socket": str(socket),
                "front": dataclasses.asdict(front or BlkfrontConfig())}  # fmt: skip
        self.domid = hv.domctl.create(memory_mb, name=f"blkif-guest-{socket.stem}",
                                      kernel=KERNEL, cmdline=json.dumps(line))  # fmt: skip
        self.backend: BackendPath | None = None
        try:
            _, self.backend = create_device(self.store, 0, self.domid, "vbd", devid)
        except BaseException:
            self.destroy()
            raise
        self.base = f"/local/domain/{self.domid}/{STORE_DIR}"

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    def read(self, key: str) -> Any:
        raw = read_optional(self.store, f"{self.base}/{key}")
        return None if raw is None else json.loads(raw)

    def wait(self, key: str, timeout: float = 30.0) -> Any:
        """The kernel's report ``key`` once it is there; GuestFailed if it failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            error = read_optional(self.store, f"{self.base}/error")
            if error is not None:
                raise GuestFailed(error.decode(errors="replace"))
            value = self.read(key)
            if value is not None:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"domain {self.domid} did not report {key!r} in {timeout} s")

    def boot(self, timeout: float = 30.0) -> dict[str, Any]:
        """Unpause; returns the ``ready`` report once the disk is served."""
        self.hv.domctl.unpause(self.domid)
        ready: dict[str, Any] = self.wait("ready", timeout)
        return ready

    def progress(self) -> dict[str, int]:
        return self.read("progress") or {"reconnects": 0, "resubmitted": 0}

    def stop(self, timeout: float = 30.0) -> int:
        """End the kernel cleanly (frontend Closed); returns its reconnect count."""
        self.store.write(f"{self.base}/{STOP_KEY}", "1")
        stopped: int = self.wait("stopped", timeout)
        return stopped

    def destroy(self) -> None:
        if self.backend is not None:
            with contextlib.suppress(OSError):
                remove_device(self.store, self.backend)
        with contextlib.suppress(OSError):
            self.hv.domctl.destroy(self.domid)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def __enter__(self) -> BlkifGuest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
