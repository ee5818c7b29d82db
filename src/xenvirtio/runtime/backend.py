"""The backend of one guest domain: its devices' models served from one asyncio loop.

XenBus devices go to a `BackendRunner` (directories made by `runtime.devices.plug`;
a new instance starts Closed and the frontend reconnects, docs/xenbus-transport.md
section 8); pci and mmio devices go to a `DeviceModelHost` (one ioreq server for the
domain, each device at its `runtime.devices` place). Disks share one
`ThreadPoolEngine`; NICs and consoles need the host's ``run_dir`` (`runtime.models`).
Classic PV disks and NICs (``specification`` "xen") go to blkback and netback
(`runtime.classic.ClassicBackends`).

    backend = DomainBackend(hv, domid, specs, run_dir=run_dir)
    await backend.start()                  # on the loop; raises (and undoes) on failure
    ...                                    # serves until
    await backend.close()

`reload(specs)` changes what a running backend serves (hot-plug): XenBus devices no
longer listed go, new ones come; pci and mmio devices stay as they are (a running
guest's PCI bus and mmio windows are fixed at boot here).

`xenvirtio backend` (cli/backend.py) runs one in a process of its own; the runtime
starts that process for each domain (`runtime.domain.start_domain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from xenvirtio.devices.blk.engine import ThreadPoolEngine
from xenvirtio.hv.api import Hypervisor, HypervisorError
from xenvirtio.runtime.classic import ClassicBackends
from xenvirtio.runtime.devices import mmio_place, pci_slot, xenbus_place
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.models import Model, ModelContext, open_model
from xenvirtio.runtime.specs import DeviceSpec, specs_from_json
from xenvirtio.transport.ioreq.host import DeviceModelHost, GuestServer
from xenvirtio.transport.xenbus import BackendRunner

log = logging.getLogger(__name__)


class DomainBackend:
    """Serves ``specs`` of guest ``domid`` with dom0's (or a driver domain's) ``hv``."""

    def __init__(
        self,
        hv: Hypervisor,
        domid: int,
        specs: list[DeviceSpec],
        *,
        workers: int = 4,
        run_dir: Path | None = None,
    ) -> None:
        self.hv, self.domid, self.specs = hv, domid, specs
        self.domain = DomainDir(run_dir, domid) if run_dir is not None else None
        self.engine = ThreadPoolEngine(workers)
        self.models: dict[str, Model] = {}
        self.classic = ClassicBackends(hv, domid, run_dir)
        self.runner: BackendRunner | None = None
        self.host: DeviceModelHost | None = None
        self.ioreq: GuestServer | None = None
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open every model and start serving it; on any failure, undo everything."""
        try:
            for spec in self.specs:
                if spec.backend_domid != self.hv.domid:
                    raise ValueError(f"{spec.name}: served by domain {spec.backend_domid}")
                if spec.xen_devtype is not None:
                    self.classic.add(spec)
                else:
                    self.models[spec.name] = open_model(spec, self._context())
            self._start_xenbus()
            self._start_ioreq()
        except BaseException:
            await self.close()
            raise
        log.info("domain %d: serving %s", self.domid, ", ".join(self.serving))

    @property
    def serving(self) -> list[str]:
        """The names of the devices served, virtio first."""
        return [*self.models, *self.classic.served]

    def _context(self) -> ModelContext:
        return ModelContext(self.engine, asyncio.get_running_loop(), self.domain)

    def _start_xenbus(self) -> None:
        for spec in self.specs:
            if spec.transport == "xenbus" and spec.xen_devtype is None:
                self._serve_xenbus(spec)

    def _serve_xenbus(self, spec: DeviceSpec) -> None:
        if self.runner is None:
            self.runner = BackendRunner(self.hv)
            self._serving = asyncio.get_running_loop().create_task(self.runner.serve())
        _, be = xenbus_place(self.domid, spec)
        if self.hv.store is None or not self.hv.store.exists(str(be)):
            raise FileNotFoundError(f"{spec.name}: {be} is not plugged")
        self.runner.add(str(be), self.models[spec.name].device, grant_usage=spec.uses_grants)

    async def reload(self, specs: list[DeviceSpec]) -> dict[str, str]:
        """Serve ``specs`` from now on (hot-plug; XenBus devices only). Returns each
        device that could not be added or removed, with why; the rest carry on."""
        wanted = {s.name for s in specs}
        failed: dict[str, str] = {}
        for spec in [s for s in self.specs if s.name not in wanted]:
            try:
                self._unserve(spec)
            except Exception as exc:
                failed[spec.name] = str(exc)
        for spec in [s for s in specs if s.name not in self.models]:
            try:
                self._hotplug(spec)
            except Exception as exc:
                failed[spec.name] = str(exc)
        served = set(self.serving)
        kept = [s for s in self.specs if s.name not in wanted and s.name in served]
        self.specs = [s for s in specs if s.name in served] + kept
        log.info("domain %d: now serving %s", self.domid, ", ".join(served) or "nothing")
        return failed

    def _hotplug(self, spec: DeviceSpec) -> None:
        if spec.xen_devtype is not None:
            raise ValueError(f"{spec.name}: classic devices cannot be added at run time")
        if spec.transport != "xenbus":
            raise ValueError(f"{spec.name}: only xenbus devices can be added at run time")
        if spec.backend_domid != self.hv.domid:
            raise ValueError(f"{spec.name}: served by domain {spec.backend_domid}")
        self.models[spec.name] = open_model(spec, self._context())
        try:
            self._serve_xenbus(spec)
        except BaseException:
            self.models.pop(spec.name).close()
            raise

    def _unserve(self, spec: DeviceSpec) -> None:
        if spec.xen_devtype is not None:
            raise ValueError(f"{spec.name}: classic devices cannot be removed at run time")
        if spec.transport != "xenbus":
            raise ValueError(f"{spec.name}: only xenbus devices can be removed at run time")
        if self.runner is not None:
            self.runner.remove(str(xenbus_place(self.domid, spec)[1]))
        model = self.models.pop(spec.name, None)
        if model is not None:
            model.close()

    def _start_ioreq(self) -> None:
        specs = [s for s in self.specs if s.transport in ("pci", "mmio")]
        if not specs:
            return
        self.host = DeviceModelHost(self.hv)
        self.ioreq = self.host.add_guest(self.domid)
        for spec in specs:
            device = self.models[spec.name].device
            if spec.transport == "pci":
                self.ioreq.add_pci(device, slot=pci_slot(spec))
            else:
                place = mmio_place(spec)
                self.ioreq.add_mmio(device, base=place.base, gsi=place.gsi)
        self.ioreq.enable()

    @property
    def failed(self) -> str | None:
        """Why the domain's ioreq server was dropped (the guest went away), if it was."""
        if self.host is not None:
            return self.host.dropped.get(self.domid)
        return None

    async def close(self) -> None:
        """Stop serving; the XenBus directories stay (a new instance takes over)."""
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
            self._serving = None
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        if self.host is not None:
            self.host.close()
            self.host = None
        self.classic.close()
        for name, model in self.models.items():
            with contextlib.suppress(Exception):
                model.close()
            log.debug("domain %d: %s closed", self.domid, name)
        self.models.clear()
        self.engine.close()


async def run_backend(
    hv: Hypervisor,
    domid: int,
    specs: list[DeviceSpec],
    stop: asyncio.Event,
    *,
    ready: Callable[[], None] | None = None,
    workers: int = 4,
    check_interval: float = 0.5,
    reload: asyncio.Event | None = None,
    on_reload: Callable[[DomainBackend], Awaitable[None]] | None = None,
    run_dir: Path | None = None,
) -> str:
    """Serve until ``stop`` is set or the domain is gone (as a device model exits with
    its guest); ``ready`` runs once every device is served; each time ``reload`` is set,
    ``on_reload`` runs (it calls `DomainBackend.reload`). Returns why it stopped."""
    backend = DomainBackend(hv, domid, specs, workers=workers, run_dir=run_dir)
    await backend.start()
    wake = asyncio.Event()
    try:
        if ready is not None:
            ready()
        while not stop.is_set():
            if reload is not None and reload.is_set() and on_reload is not None:
                reload.clear()
                await on_reload(backend)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(stop, reload or wake), check_interval)
            if not _domain_exists(hv, domid):
                return f"domain {domid} is gone"
        return "stopped"
    finally:
        await backend.close()


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _domain_exists(hv: Hypervisor, domid: int) -> bool:
    try:
        hv.domctl.info(domid)
    except HypervisorError as exc:  # ESHUTDOWN: the hypervisor itself went away
        return exc.errno not in (errno.ESRCH, errno.ESHUTDOWN)
    except OSError:  # the hypervisor itself went away
        return False
    return True


class SpecFileReloader:
    """`run_backend`'s ``on_reload`` for a backend whose specs are in a file: read it
    again, `DomainBackend.reload`, then write what is served to ``status_file``
    (``{"generation": n, "serving": [...], "failed": {name: why}}``, replaced atomically)
    so the toolstack can tell when the change took effect."""

    def __init__(self, spec_file: Path, status_file: Path) -> None:
        self.spec_file, self.status_file = spec_file, status_file
        self.generation = 0

    async def __call__(self, backend: DomainBackend) -> None:
        try:
            specs = specs_from_json(json.loads(self.spec_file.read_text()))
        except (OSError, ValueError) as exc:
            self.write(backend, {"*": f"{self.spec_file}: {exc}"})
            return
        self.write(backend, await backend.reload(specs))

    def write(self, backend: DomainBackend, failed: dict[str, str]) -> None:
        self.generation += 1
        status = {"generation": self.generation, "serving": backend.serving,
                  "failed": failed}  # fmt: skip
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.status_file)
