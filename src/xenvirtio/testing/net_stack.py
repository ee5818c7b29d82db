"""Guests with virtio-net NICs in one process, for tests and benchmarks:

    guest programs (ip netns exec xvgN-TAG ...) -> guest TAP eth0 -> VirtioNetDriver
    -> transport driver -> InProcessBus -> virtio-pci / virtio-mmio device core
    -> VirtioNetDevice -> TAP vifN in the backend namespace -> bridge xvbr0
    -> other guests' TAPs, and a veth to the peer namespace

Everything runs on one event loop thread the stack owns (the device models' thread and
the guests' CPU at once). Namespaces, bridge and TAPs are made per stack and removed
when it closes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from xenvirtio.devices.net import NetConfig, TapBackend, VirtioNetDevice
from xenvirtio.drivers.net import TapNic, VirtioNetDriver
from xenvirtio.drivers.net.driver import DEFAULT_RING_FEATURES
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.netif.tap import Tap
from xenvirtio.spec import virtio as S
from xenvirtio.testing.inproc_bus import InProcessBus, Slot
from xenvirtio.testing.net_topology import NetTopology, ns_command
from xenvirtio.transport.dma import DmaPool, DmaWindow

R = TypeVar("R")
TransportKind = Literal["mmio", "pci", "pci-intx"]
GUEST_IFNAME = "eth0"


@dataclass(eq=False)
class Guest:
    """One guest: its NIC's device model, memory, transport slot and driver."""

    index: int
    netns: str
    address: str
    vif: Tap
    device: VirtioNetDevice
    mem: FlatMemory
    dma: DmaPool
    slot: Slot
    nic: TapNic
    driver: VirtioNetDriver

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this guest."""
        return ns_command(self.netns, argv)


class NetStack:
    """``with NetStack(guests=2) as stack: stack.guests[0].command(["ping", ...])``."""

    def __init__(
        self,
        *,
        guests: int = 2,
        transport: TransportKind = "pci",
        packed: bool = False,
        mtu: int = 1500,
        pairs: int = 1,
        config: NetConfig | None = None,
        exclude: int = 0,
        rx_buf_size: int = 8192,
        mem_size: int = 48 << 20,
        auto_reconnect: bool = False,
    ) -> None:
        self.count, self.transport, self.packed = guests, transport, packed
        self.mtu, self.pairs, self.exclude, self.rx_buf_size = mtu, pairs, exclude, rx_buf_size
        self._config = config
        self.auto_reconnect = auto_reconnect
        self.mem_size = mem_size + (pairs - 1) * (24 << 20)
        self.topology = NetTopology(mtu=mtu)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="net-stack")
        self.bus = InProcessBus()
        self.guests: list[Guest] = []

    def run(self, coro: Coroutine[Any, Any, R], timeout: float = 60.0) -> R:
        future: Future[R] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, func: Any, *args: Any) -> Any:
        async def call() -> Any:
            return func(*args)

        return self.run(call())

    def __enter__(self) -> NetStack:
        self._thread.start()
        try:
            self.topology.__enter__()
            for index in range(1, self.count + 1):
                self.guests.append(self.call(self._build, index))
                self.run(self.guests[-1].driver.start())
        except BaseException:
            self.__exit__()
            raise
        return self

    def _device_config(self, index: int) -> NetConfig:
        base = self._config or NetConfig(mtu=self.mtu, max_pairs=self.pairs)
        mac = bytes((0x02, 0x58, 0x56, int(self.topology.tag[:2], 16), 0, index))
        return NetConfig(**{**base.__dict__, "mac": mac})

    def _build(self, index: int) -> Guest:
        topo = self.topology
        config = self._device_config(index)
        vif = Tap.open(f"vif{index}", queues=config.max_pairs, netns=topo.backend_ns)
        topo.attach(vif.name)
        device = VirtioNetDevice(TapBackend(vif), self.loop, config)
        mem = FlatMemory(self.mem_size)
        window = DmaWindow(mem, 0x1000, self.mem_size - 0x1000)
        if self.transport == "mmio":
            slot = self.bus.add_mmio(device, mem, dma=window)
        else:
            slot = self.bus.add_pci(device, mem, msix=self.transport == "pci", dma=window)
        netns = topo.add_guest_ns(index)
        nic = TapNic(GUEST_IFNAME, netns, queues=config.max_pairs)
        ring = DEFAULT_RING_FEATURES
        if not self.packed:
            ring &= ~(1 << S.VIRTIO_F_RING_PACKED)
        dma = DmaPool.for_transport(slot.transport)
        driver = VirtioNetDriver(
            slot.transport,
            dma,
            nic,
            ring_features=ring,
            exclude=self.exclude,
            rx_buf_size=self.rx_buf_size,
            auto_reconnect=self.auto_reconnect,
        )
        slot.handler = driver.interrupt
        address = topo.configure_guest(netns, GUEST_IFNAME, 10 + index)
        return Guest(index, netns, address, vif, device, mem, dma, slot, nic, driver)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._thread.is_alive():
                for guest in self.guests:
                    self.call(guest.driver.close)
                    self.call(guest.device.reset)
        finally:
            for guest in self.guests:
                guest.nic.close()
                guest.vif.close()
            if self._thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout=30)
            self.loop.close()
            self.topology.__exit__()
