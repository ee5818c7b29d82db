"""The backend of one guest domain: its devices' models served from one asyncio loop.

XenBus devices go to a `BackendRunner` (directories made by `runtime.devices.plug`;
a new instance starts Closed and the frontend reconnects, docs/xenbus-transport.md
section 8); pci and mmio devices go to a `DeviceModelHost` (one ioreq server for the
domain, each device at its `runtime.devices` place). Disks share one
`ThreadPoolEngine`.

    backend = DomainBackend(hv, domid, specs)
    await backend.start()                  # on the loop; raises (and undoes) on failure
    ...                                    # serves until
    await backend.close()

`xenvirtio backend` (cli/backend.py) runs one in a process of its own; the runtime
starts that process for each domain (`runtime.domain.start_domain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable

from xenvirtio.devices.blk.engine import ThreadPoolEngine
from xenvirtio.hv.api import Hypervisor, HypervisorError
from xenvirtio.runtime.devices import mmio_place, pci_slot, xenbus_place
from xenvirtio.runtime.models import Model, open_model
from xenvirtio.runtime.specs import DeviceSpec
from xenvirtio.transport.ioreq.host import DeviceModelHost, GuestServer
from xenvirtio.transport.xenbus import BackendRunner

log = logging.getLogger(__name__)


class DomainBackend:
    """Serves ``specs`` of guest ``domid`` with dom0's (or a driver domain's) ``hv``."""

    def __init__(
        self, hv: Hypervisor, domid: int, specs: list[DeviceSpec], *, workers: int = 4
    ) -> None:
        self.hv, self.domid, self.specs = hv, domid, specs
        self.engine = ThreadPoolEngine(workers)
        self.models: dict[str, Model] = {}
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
                self.models[spec.name] = open_model(spec, self.engine)
            self._start_xenbus()
            self._start_ioreq()
        except BaseException:
            await self.close()
            raise
        log.info("domain %d: serving %s", self.domid, ", ".join(self.models))

    def _start_xenbus(self) -> None:
        specs = [s for s in self.specs if s.transport == "xenbus"]
        if not specs:
            return
        self.runner = BackendRunner(self.hv)
        for spec in specs:
            _, be = xenbus_place(self.domid, spec)
            if self.hv.store is None or not self.hv.store.exists(str(be)):
                raise FileNotFoundError(f"{spec.name}: {be} is not plugged")
            self.runner.add(str(be), self.models[spec.name].device, grant_usage=spec.uses_grants)
        self._serving = asyncio.get_running_loop().create_task(self.runner.serve())

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
) -> str:
    """Serve until ``stop`` is set or the domain is gone (as a device model exits with
    its guest); ``ready`` runs once every device is served. Returns why it stopped."""
    backend = DomainBackend(hv, domid, specs, workers=workers)
    await backend.start()
    try:
        if ready is not None:
            ready()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), check_interval)
            if not _domain_exists(hv, domid):
                return f"domain {domid} is gone"
        return "stopped"
    finally:
        await backend.close()


def _domain_exists(hv: Hypervisor, domid: int) -> bool:
    try:
        hv.domctl.info(domid)
    except HypervisorError as exc:
        return exc.errno != errno.ESRCH
    except OSError:  # the hypervisor itself went away
        return False
    return True
