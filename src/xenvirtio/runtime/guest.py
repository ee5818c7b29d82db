"""The guest kernel: brings up a domain's virtio devices and exports them to the host.

``domctl.create(..., kernel="xenvirtio.runtime.guest:kernel", cmdline=boot_line(...))``.
The command line is JSON: the run directory and the domain's device specs (what a
device tree or kernel command line tells a real guest; XenBus devices are also found
in XenStore, PCI functions by the firmware scan). For each disk the kernel opens the
transport at the device's place (`GuestDevices`), probes it with `VirtioBlkDriver` and
serves it as an NBD export on ``<run-dir>/domains/<domid>/<vdev>.nbd``; it reports each
device's state under ``/local/domain/<domid>/data/xenvirtio/<name>/`` (`layout`).
One asyncio loop runs every driver and export. A device that fails is reported
``failed`` with its error; the others carry on.

After a XenBus backend restart the driver sees DEVICE_NEEDS_RESET, resets, probes again
and replays what was in flight (`VirtioBlkDriver.reconnect`); NBD clients just wait.
The kernel runs until the domain is destroyed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from pathlib import Path
from typing import Any

from xenvirtio.drivers.blk.driver import DEFAULT_RING_FEATURES, VirtioBlkDriver
from xenvirtio.hv.api.guest import Guest
from xenvirtio.nbd.server import NbdServer
from xenvirtio.runtime.guest_transport import GuestDevices
from xenvirtio.runtime.layout import DomainDir, endpoint_dir
from xenvirtio.runtime.specs import DeviceSpec, DiskSpec, specs_from_json, specs_to_json
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.features import bit
from xenvirtio.xenstore.client import XenstoreClient

log = logging.getLogger(__name__)
KERNEL = "xenvirtio.runtime.guest:kernel"


def boot_line(run_dir: Path, specs: list[DeviceSpec]) -> str:
    """The kernel's command line for a domain with ``specs``."""
    return json.dumps({"run_dir": str(run_dir), "devices": specs_to_json(specs)})


def kernel(guest: Guest, cmdline: str) -> int:
    args = json.loads(cmdline)
    specs = specs_from_json(args["devices"])
    domain_dir = DomainDir(Path(args["run_dir"]), guest.domid)
    asyncio.run(GuestKernel(guest, domain_dir, specs).run())
    return 0


class GuestKernel:
    """The devices of one guest, on the running loop."""

    def __init__(self, guest: Guest, domain_dir: DomainDir, specs: list[DeviceSpec]) -> None:
        store = guest.hypervisor.store
        if store is None:
            raise RuntimeError("the guest has no XenStore")
        self.guest, self.store, self.dir, self.specs = guest, store, domain_dir, specs
        self.devices = GuestDevices(guest)
        self.drivers: dict[str, VirtioBlkDriver] = {}
        self.servers: list[NbdServer] = []

    async def run(self) -> None:
        self.devices.attach(asyncio.get_running_loop())
        try:
            for spec in self.specs:
                await self._bring_up(spec)
            await self._report_reconnects()  # until the domain is destroyed
        finally:
            for server in self.servers:
                await server.close()
            for driver in self.drivers.values():
                driver.close()
            self.devices.close()

    async def _report_reconnects(self, interval: float = 0.25) -> None:
        """Publish each disk's reconnect count when it changes (a backend restarted)."""
        seen = {name: 0 for name in self.drivers}
        while True:
            await asyncio.sleep(interval)
            for name, driver in self.drivers.items():
                if driver.reconnects != seen[name]:
                    seen[name] = driver.reconnects
                    base = endpoint_dir(self.guest.domid, name)
                    _publish(self.store, base, {"reconnects": driver.reconnects})

    async def _bring_up(self, spec: DeviceSpec) -> None:
        base = endpoint_dir(self.guest.domid, spec.name)
        _publish(self.store, base, {"state": "starting"})
        try:
            if not isinstance(spec, DiskSpec):
                raise ValueError(f"no driver for a {spec.kind}")
            ring = await self._disk(spec)
        except Exception as exc:
            log.warning("%s: %s", spec.name, exc)
            _publish(self.store, base, {"state": "failed", "error": _describe(exc)})
            return
        _publish(self.store, base, {"state": "ready", "ring": ring})

    async def _disk(self, spec: DiskSpec) -> str:
        opened = self.devices.open(spec)
        if opened.transport.device_id != S.VirtioDeviceId.BLOCK:
            raise ValueError(f"device id {opened.transport.device_id} is not a disk")
        ring = DEFAULT_RING_FEATURES
        if spec.ring == "split":
            ring &= ~bit(S.VIRTIO_F_RING_PACKED)
        driver = VirtioBlkDriver(opened.transport, ring_features=ring, queue_size=64)
        opened.set_handler(driver.interrupt)
        self.drivers[spec.name] = driver
        server = NbdServer(driver, export_name=spec.vdev, description=f"{spec.transport} disk")
        self.servers.append(server)
        await server.start_unix(self.dir.nbd_socket(spec.name))
        return "packed" if driver.features & bit(S.VIRTIO_F_RING_PACKED) else "split"


def _publish(store: XenstoreClient, base: str, values: dict[str, Any]) -> None:
    with store.transaction() as t:
        for key, value in values.items():
            t.write(f"{base}/{key}", str(value))


def _describe(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last[:1000]
