"""The guest kernel: brings up a domain's virtio devices and exports them to the host.

``domctl.create(..., kernel="xenvirtio.runtime.guest:kernel", cmdline=boot_line(...))``.
The command line is JSON: the run directory, the domain's name and its device specs
(what a device tree or kernel command line tells a real guest; XenBus devices are also
found in XenStore, PCI functions by the firmware scan). For each device the kernel opens
the transport at the device's place (`GuestDevices`), probes its driver and serves what
it gives the host (`guest_services`: a disk's NBD export, a NIC in the domain's network
namespace, a console's getty, an rng's entropy socket); a classic PV disk or NIC gets
blkfront or netfront instead (`guest_classic`), served the same way. It reports each device's state
under ``/local/domain/<domid>/data/xenvirtio/<name>/`` (`layout`).
One asyncio loop runs every driver and export. A device that fails is reported
``failed`` with its error; the others carry on. Devices come and go at run time over
XenBus (`GuestKernel`); ``control/shutdown`` = ``poweroff`` ends the kernel: every
export closed, every driver reset, every frontend Closed, then the domain shuts down.

After a XenBus backend restart the driver sees DEVICE_NEEDS_RESET, resets, probes again
and replays what was in flight (`VirtioBlkDriver.reconnect`); NBD clients just wait.
The kernel runs until it is asked to shut down or the domain is destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import traceback
from pathlib import Path
from typing import Any, Final

from xenvirtio.hv.api.guest import Guest
from xenvirtio.hv.xenbus.ops import read_optional
from xenvirtio.runtime.devices import xenbus_place
from xenvirtio.runtime.guest_classic import ClassicService, start_classic
from xenvirtio.runtime.guest_services import GuestContext, Service, start_service
from xenvirtio.runtime.guest_transport import GuestDevices
from xenvirtio.runtime.layout import HOTPLUG_SPEC_KEY, DomainDir, endpoint_dir
from xenvirtio.runtime.specs import (
    DeviceSpec,
    spec_from_json,
    specs_from_json,
    specs_to_json,
)
from xenvirtio.transport.xenbus.keys import DEVTYPE
from xenvirtio.xenstore.client import XenstoreClient
from xenvirtio.xenstore.client_protocol import XenstoreError

log = logging.getLogger(__name__)
KERNEL = "xenvirtio.runtime.guest:kernel"
MAX_HOTPLUG: Final = 256  # devids looked at per scan (xenbus devids are 0..255)


def boot_line(run_dir: Path, specs: list[DeviceSpec], name: str = "") -> str:
    """The kernel's command line for a domain ``name`` with ``specs``."""
    return json.dumps({"run_dir": str(run_dir), "name": name, "devices": specs_to_json(specs)})


def kernel(guest: Guest, cmdline: str) -> int:
    args = json.loads(cmdline)
    specs = specs_from_json(args["devices"])
    domain_dir = DomainDir(Path(args["run_dir"]), guest.domid)
    name = str(args.get("name") or f"domain{guest.domid}")
    asyncio.run(GuestKernel(guest, domain_dir, specs, name).run())
    return 0


class GuestKernel:
    """The devices of one guest, on the running loop.

    After boot it polls (every ``interval`` s) what the toolstack tells it in XenStore:
    ``control/shutdown`` = ``poweroff`` (or ``halt``) ends the kernel cleanly; a new
    ``device/virtio/<devid>`` carrying `HOTPLUG_SPEC_KEY` is brought up (hot-plug); a
    XenBus device whose backend went ``online`` = 0 is closed in order and its report
    removed (hot-unplug, as a Linux frontend leaves when libxl detaches it).
    """

    def __init__(
        self, guest: Guest, domain_dir: DomainDir, specs: list[DeviceSpec], name: str = ""
    ) -> None:
        store = guest.hypervisor.store
        if store is None:
            raise RuntimeError("the guest has no XenStore")
        self.guest, self.store, self.dir, self.specs = guest, store, domain_dir, specs
        self.context = GuestContext(domain_dir, name or f"domain{guest.domid}")
        self.devices = GuestDevices(guest)
        self.running: dict[str, Service | ClassicService] = {}
        self.tried: dict[int, bytes] = {}  # hot-plug announcements acted on, by devid
        self.home = f"/local/domain/{guest.domid}"

    async def run(self, interval: float = 0.2) -> None:
        self.devices.attach(asyncio.get_running_loop())
        try:
            for spec in self.specs:
                await self._bring_up(spec)
            await self._serve(interval)
        finally:
            for name in list(self.running):
                await self._close(name)
            self.devices.close()

    async def _serve(self, interval: float) -> None:
        """Until the toolstack asks for a shutdown (or the domain is destroyed). Without
        XenStore (its daemon died) the devices keep running; only the toolstack's
        requests cannot arrive."""
        reported = {name: 0 for name in self.running}
        while True:
            await asyncio.sleep(interval)
            try:
                if self._shutdown_requested():
                    break
                await self._hotplug()
                self._report(reported)
            except OSError as exc:  # XenStore went away: keep serving the exports
                log.debug("domain %d: XenStore: %s", self.guest.domid, exc)
        log.info("domain %d: shutdown requested", self.guest.domid)

    def _report(self, reported: dict[str, int]) -> None:
        """Publish each disk's reconnect count when it changes (a backend restarted)."""
        for name, device in self.running.items():
            count = device.reconnects
            if count != reported.get(name, 0):
                reported[name] = count
                _publish(self.store, endpoint_dir(self.guest.domid, name), {"reconnects": count})

    def _shutdown_requested(self) -> bool:
        raw = read_optional(self.store, f"{self.home}/control/shutdown")
        return raw in (b"poweroff", b"halt")

    async def _hotplug(self) -> None:
        try:
            devids = self.store.directory(f"{self.home}/device/{DEVTYPE}")
        except XenstoreError:
            devids = []
        listed = {int(d) for d in devids[:MAX_HOTPLUG] if d.isdigit() and len(d) <= 3}
        for name, device in list(self.running.items()):
            spec = device.spec
            if spec.xen_devtype is not None or spec.transport != "xenbus":
                continue  # classic devices stay for the domain's life
            if spec.devid not in listed or self._offline(spec):
                await self._close(name)
                self.tried.pop(spec.devid, None)
                with contextlib.suppress(XenstoreError):
                    self.store.rm(endpoint_dir(self.guest.domid, name))
        self.tried = {d: raw for d, raw in self.tried.items() if d in listed}
        busy = {d.spec.devid for d in self.running.values()
                if d.spec.transport == "xenbus" and d.spec.xen_devtype is None}  # fmt: skip
        for devid in sorted(listed - busy):
            new = self._announced(devid)
            if new is not None:
                await self._bring_up(new)

    def _offline(self, spec: DeviceSpec) -> bool:
        _, be = xenbus_place(self.guest.domid, spec)
        return read_optional(self.store, f"{be}/online") == b"0"

    def _announced(self, devid: int) -> DeviceSpec | None:
        """The spec the toolstack wrote for a hot-plugged device not tried yet, if sound
        and its backend is online (not one still being unplugged)."""
        path = f"{self.home}/device/{DEVTYPE}/{devid}/{HOTPLUG_SPEC_KEY}"
        raw = read_optional(self.store, path)
        if raw is None or self.tried.get(devid) == raw:
            return None
        try:
            spec = spec_from_json(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("device %d: bad %s: %s", devid, HOTPLUG_SPEC_KEY, exc)
            self.tried[devid] = raw
            return None
        if spec.transport != "xenbus" or spec.xen_devtype is not None:
            return None
        if spec.devid != devid or spec.name in self.running:
            return None
        _, be = xenbus_place(self.guest.domid, spec)
        if read_optional(self.store, f"{be}/online") != b"1":
            return None
        self.tried[devid] = raw
        return spec

    async def _close(self, name: str) -> None:
        await self.running.pop(name).close()

    async def _bring_up(self, spec: DeviceSpec) -> None:
        base = endpoint_dir(self.guest.domid, spec.name)
        _publish(self.store, base, {"state": "starting"})
        try:
            service = await self._start(spec)
        except Exception as exc:
            log.warning("%s: %s", spec.name, exc)
            _publish(self.store, base, {"state": "failed", "error": _describe(exc)})
            return
        self.running[spec.name] = service
        _publish(self.store, base, {"state": "ready", "ring": service.ring})

    async def _start(self, spec: DeviceSpec) -> Service | ClassicService:
        if spec.xen_devtype is not None:
            return await start_classic(spec, self.guest, self.context)
        opened = self.devices.open(spec)
        try:
            return await start_service(spec, opened, self.context)
        except BaseException:
            with contextlib.suppress(Exception):  # a service may have closed it
                opened.close()
            raise


def _publish(store: XenstoreClient, base: str, values: dict[str, Any]) -> None:
    with store.transaction() as t:
        for key, value in values.items():
            t.write(f"{base}/{key}", str(value))


def _describe(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last[:1000]
