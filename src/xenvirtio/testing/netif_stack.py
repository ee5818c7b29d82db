"""Guests with netif NICs on an emu host, for tests and benchmarks:

    guest programs (ip netns exec xvgN-TAG ...) -> guest TAP eth0 -> netfront (acting
    as domain N through ``attach_guest``) -> tx/rx rings, grants, event channels ->
    netback (dom0, its own reactor thread) -> TAP vifN.0 in the backend namespace ->
    bridge xvbr0 -> other guests' vifs, and a veth to the peer namespace

Every frontend runs on one event loop thread the stack owns; netback on its runner's
thread. Namespaces, bridge, TAPs, domains and XenStore directories are made per stack
and removed when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from xenvirtio.devices.netif.backend import NetifBackend
from xenvirtio.devices.netif.runner import NetifBackendRunner
from xenvirtio.devices.netif.vif import VifConfig
from xenvirtio.drivers.netif.frontend import NetfrontConfig, NetifFrontend
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu import open_emu
from xenvirtio.hv.emu.guest import EmuGuest, attach_guest
from xenvirtio.hv.xenbus.paths import BackendPath
from xenvirtio.hv.xenbus.toolstack import create_device, remove_device
from xenvirtio.spec import netif as N
from xenvirtio.testing.net_topology import BRIDGE, NetTopology, ns_command

R = TypeVar("R")
GUEST_MEMORY_MB = 16


@dataclass(eq=False)
class NetifGuest:
    """One guest: its domain, netns, address and frontend; ``backend`` its netback."""

    index: int
    domid: int
    netns: str
    address: str
    guest: EmuGuest
    backend_path: BackendPath
    front: NetifFrontend
    backend: NetifBackend

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this guest."""
        return ns_command(self.netns, argv)


class NetifStack:
    """``with NetifStack(run_dir, guests=2) as s: ping(s.guests[0].netns, ...)``."""

    def __init__(
        self, run_dir: Path, *, guests: int = 2, front: NetfrontConfig | None = None,
        back: VifConfig | None = None, mtu: int = 1500,
    ) -> None:  # fmt: skip
        self.run_dir = run_dir
        self.count = guests
        self.front_config = front or NetfrontConfig()
        self.back_config = back or VifConfig()
        self.topology = NetTopology(mtu=mtu)
        self.dom0: Hypervisor | None = None
        self.runner: NetifBackendRunner | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="netfront")
        self.guests: list[NetifGuest] = []
        self._domids: list[int] = []
        self._paths: list[BackendPath] = []
        self._attached: list[EmuGuest] = []

    def run(self, coro: Coroutine[Any, Any, R], timeout: float = 60.0) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the frontends' loop thread."""

        async def call() -> Any:
            return fn(*args)

        return self.run(call())

    def __enter__(self) -> NetifStack:
        try:
            self.topology.__enter__()
            self.dom0 = open_emu(self.run_dir)
            self.runner = NetifBackendRunner(self.dom0)
            self.runner.start_thread(0.02)
            self._thread.start()
            for i in range(1, self.count + 1):
                self.add_guest(i)
        except BaseException:
            self.__exit__()
            raise
        return self

    def add_guest(self, index: int, front: NetfrontConfig | None = None) -> NetifGuest:
        assert self.dom0 is not None and self.dom0.store is not None and self.runner
        domid = self.dom0.domctl.create(GUEST_MEMORY_MB, name=f"netif-{id(self):x}-{index}")
        self._domids.append(domid)
        netns = self.topology.add_guest_ns(index)
        mac = f"00:16:3e:{self.topology.net:02x}:00:{index:02x}"
        _, path = create_device(self.dom0.store, 0, domid, "vif", 0,
                                {N.KEY_MAC: mac, N.KEY_HANDLE: 0, "bridge": BRIDGE},
                                {N.KEY_MAC: mac, N.KEY_HANDLE: 0})  # fmt: skip
        self._paths.append(path)
        config = VifConfig(netns=self.topology.backend_ns, bridge=BRIDGE, mtu=self.topology.mtu)
        back_config = _merge(self.back_config, config)
        backend = self.runner.add(str(path), back_config)
        guest = attach_guest(self.run_dir, domid)
        self._attached.append(guest)
        base = front or self.front_config
        fconf = NetfrontConfig(**{**base.__dict__, "netns": netns, "mtu": self.topology.mtu})

        async def start() -> NetifFrontend:
            fe = NetifFrontend(guest, 0, fconf)
            await fe.start()
            return fe

        fe = self.run(start())
        address = self.topology.configure_guest(netns, fconf.ifname, 10 + index)
        g = NetifGuest(index, domid, netns, address, guest, path, fe, backend)
        self.guests.append(g)
        return g

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            for g in self.guests:
                with contextlib.suppress(Exception):
                    self.call(g.front.close)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()
        if self.runner is not None:
            self.runner.close()
        for guest in self._attached:
            guest.close()
        if self.dom0 is not None and self.dom0.store is not None:
            for path in self._paths:
                with contextlib.suppress(OSError):
                    remove_device(self.dom0.store, path)
            for domid in self._domids:
                with contextlib.suppress(OSError):
                    self.dom0.domctl.destroy(domid)
            self.dom0.close()
        self.topology.__exit__()


def _merge(base: VifConfig, where: VifConfig) -> VifConfig:
    """``base`` placed where the stack's topology says (netns, bridge, MTU)."""
    return VifConfig(**{**base.__dict__, "netns": where.netns, "bridge": where.bridge,
                        "mtu": where.mtu})  # fmt: skip
