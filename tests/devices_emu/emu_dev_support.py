"""dom0's side of the per-transport device tests on emu: device models served to guest
domains over XenBus (`BackendRunner`) or through ioreqs (`DeviceModelHost`), each on an
asyncio loop thread of dom0, and guest domains running
`xenvirtio.testing.guest_devices.device_kernel`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from xenvirtio.hv.api import DomainState, Hypervisor
from xenvirtio.hv.xenbus.client import create_device, remove_device
from xenvirtio.hv.xenbus.paths import BackendPath
from xenvirtio.runtime import open_hypervisor
from xenvirtio.testing.guest_devices import STOP_KEY
from xenvirtio.testing.hv_harness import wait_until
from xenvirtio.testing.ioreq_guest import STORE_DIR
from xenvirtio.transport.api import VirtioDevice
from xenvirtio.transport.ioreq import HostThread
from xenvirtio.transport.xenbus import BackendRunner

R = TypeVar("R")
KERNEL = "xenvirtio.testing.guest_devices:device_kernel"
TRANSPORTS = ["xenbus", "pci-msix", "pci-intx", "mmio"]
MMIO_BASE = 0x0200_0000  # GUEST_VIRTIO_MMIO_BASE
MMIO_GSI = 33  # GUEST_VIRTIO_MMIO_SPI_FIRST
PCI_SLOT = 4


class DeviceHost:
    """Device models for guests on one transport, served from one dom0 loop thread with
    handles of their own. ``call`` runs a function there (build devices on it)."""

    def __init__(self, run_dir: Path, transport: str) -> None:
        self.transport = transport
        self.hv = open_hypervisor(run_dir=run_dir)
        self.dm: HostThread | None = None
        self.runner: BackendRunner | None = None
        self._thread: threading.Thread | None = None
        self._backends: list[BackendPath] = []
        self._guests: list[int] = []
        if transport == "xenbus":
            self.loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
            self._thread.start()
            self.runner = self.call(BackendRunner, self.hv)
            self._serving = self.call(lambda: self.loop.create_task(self._runner().serve()))
        else:
            self.dm = HostThread(self.hv)
            self.loop = self.dm.loop

    def _runner(self) -> BackendRunner:
        assert self.runner is not None
        return self.runner

    def call(self, fn: Callable[..., R], *args: Any, timeout: float = 30.0) -> R:
        future: Future[R] = Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def plug(self, domid: int, device: VirtioDevice) -> None:
        """Serve ``device`` to guest ``domid`` (paused, not yet probing)."""
        if self.runner is not None:
            assert self.hv.store is not None
            _, backend = create_device(self.hv.store, 0, domid, "virtio", 0)
            self._backends.append(backend)
            self.call(self.runner.add, str(backend), device)
            return
        assert self.dm is not None
        self.call(self._serve_ioreq, domid, device)
        self._guests.append(domid)

    def _serve_ioreq(self, domid: int, device: VirtioDevice) -> None:
        assert self.dm is not None
        guest = self.dm.host.add_guest(domid)
        if self.transport == "mmio":
            guest.add_mmio(device, base=MMIO_BASE, gsi=MMIO_GSI)
        else:
            guest.add_pci(device, slot=PCI_SLOT)
        guest.enable()

    def guest_args(self) -> dict[str, Any]:
        return {"transport": self.transport, "base": MMIO_BASE, "gsi": MMIO_GSI, "devid": 0}

    def unplug_all(self) -> None:
        for backend in self._backends:
            if self.runner is not None:
                with contextlib.suppress(Exception):
                    self.call(self.runner.remove, str(backend))
            assert self.hv.store is not None
            with contextlib.suppress(OSError):
                remove_device(self.hv.store, backend)
        self._backends.clear()
        for domid in self._guests:
            if self.dm is not None:
                with contextlib.suppress(Exception):
                    self.call(self.dm.host.remove_guest, domid)
        self._guests.clear()

    def close(self) -> None:
        try:
            self.unplug_all()
            if self.runner is not None:
                self.call(self._serving.cancel)
                ended = asyncio.run_coroutine_threadsafe(asyncio.wait({self._serving}), self.loop)
                ended.result(10)
                self.call(self.runner.close)
        finally:
            if self.dm is not None:
                self.dm.close()
            if self._thread is not None:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout=30)
                self.loop.close()
            self.hv.close()


class GuestDomain:
    """A domain running the device kernel: PV for XenBus, HVM for ioreqs."""

    def __init__(self, hv: Hypervisor, domid: int) -> None:
        self.hv, self.domid = hv, domid
        assert hv.store is not None
        self.store = hv.store
        self.base = f"/local/domain/{domid}/{STORE_DIR}"

    def report(self, key: str) -> Any:
        path = f"{self.base}/{key}"
        return json.loads(self.store.read(path)) if self.store.exists(path) else None

    def wait_report(self, key: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.report(key)
            if value is not None:
                return value
            if self.hv.domctl.info(self.domid).state is DomainState.SHUTDOWN:
                raise AssertionError(f"domain {self.domid} ended: {self.report('error')}")
            time.sleep(0.02)
        raise AssertionError(f"domain {self.domid} never reported {key}")

    def wait_exit(self, timeout: float = 60.0) -> None:
        ended = wait_until(
            lambda: self.hv.domctl.info(self.domid).state is DomainState.SHUTDOWN, timeout
        )
        assert ended, f"domain {self.domid} still running after {timeout} s"
        code = self.hv.domctl.info(self.domid).exit_code
        assert code == 0, f"domain {self.domid} exited {code}: {self.report('error')}"

    def stop(self, timeout: float = 30.0) -> Any:
        """Ask a serving guest to finish; its ``result``."""
        self.store.write(f"{self.base}/{STOP_KEY}", "1")
        self.wait_exit(timeout)
        return self.report("result")


@contextmanager
def guest_domain(
    hv: Hypervisor,
    host: DeviceHost,
    device: VirtioDevice,
    args: dict[str, Any],
    *,
    name: str,
    memory_mb: int = 32,
) -> Iterator[GuestDomain]:
    """A guest with ``device`` plugged, running (unpaused); destroyed afterwards."""
    kind: Literal["pv", "hvm"] = "pv" if host.transport == "xenbus" else "hvm"
    cmdline = json.dumps({**host.guest_args(), **args})
    domid = hv.domctl.create(memory_mb, 1, kind, name=name, kernel=KERNEL, cmdline=cmdline)
    try:
        host.plug(domid, device)
        hv.domctl.unpause(domid)
        yield GuestDomain(hv, domid)
    finally:
        with contextlib.suppress(OSError):
            hv.domctl.destroy(domid)
