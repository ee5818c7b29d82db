"""The backend side of a domain's classic PV devices (``specification`` "xen").

A disk is a blkback vbd on its image (`BlkifBackendRunner`), a NIC a netback vif: a TAP
``vif<domid>.<devid>`` on the NIC's bridge in the host's backend network namespace
(`NetifBackendRunner`, whose thread lives in that namespace). Each runner has a thread
of its own, made when its first device comes; the XenBus directories are made by
`runtime.devices.plug` beforehand.

    classic = ClassicBackends(hv, domid, run_dir)
    classic.add(spec)       # a vbd or vif served from now on
    classic.close()         # every device gone, threads stopped
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from xenvirtio.devices.blkif.backend import BlkbackConfig, BlkifBackendRunner
from xenvirtio.devices.netif.runner import NetifBackendRunner
from xenvirtio.devices.netif.vif import VifConfig
from xenvirtio.hv.api import Hypervisor
from xenvirtio.runtime.devices import xenbus_place
from xenvirtio.runtime.network import backend_netns
from xenvirtio.runtime.specs import DeviceSpec, DiskSpec, NetSpec


class ClassicBackends:
    """blkback and netback for the classic devices of guest ``domid``."""

    def __init__(self, hv: Hypervisor, domid: int, run_dir: Path | None) -> None:
        self.hv, self.domid, self.run_dir = hv, domid, run_dir
        self.blkback: BlkifBackendRunner | None = None
        self.netback: NetifBackendRunner | None = None
        self.served: dict[str, str] = {}  # device name -> backend directory

    def add(self, spec: DeviceSpec) -> None:
        """Serve ``spec`` (its directories must exist: FileNotFoundError if not)."""
        _, be = xenbus_place(self.domid, spec)
        if self.hv.store is None or not self.hv.store.exists(str(be)):
            raise FileNotFoundError(f"{spec.name}: {be} is not plugged")
        if isinstance(spec, DiskSpec):
            self._blkback().add(str(be), Path(spec.image),
                                BlkbackConfig(read_only=spec.read_only))  # fmt: skip
        elif isinstance(spec, NetSpec):
            config = VifConfig(bridge=spec.bridge, mtu=spec.mtu, max_queues=spec.queues)
            self._netback().add(str(be), config)
        else:
            raise ValueError(f"a {spec.kind} has no classic backend")
        self.served[spec.name] = str(be)

    def _blkback(self) -> BlkifBackendRunner:
        if self.blkback is None:
            self.blkback = BlkifBackendRunner(self.hv, workers=4)
            self.blkback.start_thread()
        return self.blkback

    def _netback(self) -> NetifBackendRunner:
        if self.run_dir is None:
            raise ValueError("a classic NIC needs the host's run directory")
        if self.netback is None:
            self.netback = NetifBackendRunner(self.hv)
            self.netback.start_thread(netns=backend_netns(self.run_dir))
        return self.netback

    def close(self) -> None:
        """Stop serving; the XenBus directories stay (as for virtio devices)."""
        for runner in (self.blkback, self.netback):
            if runner is not None:
                with contextlib.suppress(Exception):
                    runner.close()
        self.blkback = self.netback = None
        self.served.clear()
