"""Guests with virtio-net NICs, for tests and benchmarks:

    guest programs (ip netns exec xvgN-TAG ...) -> guest TAP eth0 -> VirtioNetDriver
    -> transport driver -> InProcessBus -> virtio-pci / virtio-mmio device core
    -> VirtioNetDevice -> TAP vifN in the backend namespace -> bridge xvbr0
    -> other guests' TAPs, and a veth to the peer namespace

`NetStack` runs every guest on one event loop thread it owns (the device models' thread
and the guests' CPUs at once), so tests reach every object. `ProcessNetStack` runs each
guest (its driver, bus and device model) in a process of its own, as separate domains
run on separate CPUs: the bridge between them is the only thing they share. Namespaces,
bridge and TAPs are made per stack and removed when it closes.
"""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import asdict, dataclass
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
_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class GuestOptions:
    """How every guest of a stack is built."""

    transport: TransportKind = "pci"
    packed: bool = False
    mtu: int = 1500
    pairs: int = 1
    exclude: int = 0
    rx_buf_size: int = 8192
    mem_size: int = 48 << 20
    auto_reconnect: bool = False


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

    def close(self) -> None:
        self.nic.close()
        self.vif.close()


def _device_config(
    topo: NetTopology, opts: GuestOptions, base: NetConfig | None, index: int
) -> NetConfig:
    base = base or NetConfig(mtu=opts.mtu, max_pairs=opts.pairs)
    mac = bytes((0x02, 0x58, 0x56, int(topo.tag[:2], 16), 0, index))
    return NetConfig(**{**base.__dict__, "mac": mac})


def build_guest(
    topo: NetTopology,
    bus: InProcessBus,
    loop: asyncio.AbstractEventLoop,
    index: int,
    netns: str,
    opts: GuestOptions,
    config: NetConfig | None = None,
) -> Guest:
    """Guest ``index`` with its NIC in ``netns`` (already made) on ``bus``, its device
    model on ``loop``; call on the loop's thread, then ``await guest.driver.start()``."""
    config = _device_config(topo, opts, config, index)
    vif = Tap.open(f"vif{index}", queues=config.max_pairs, netns=topo.backend_ns)
    topo.attach(vif.name)
    device = VirtioNetDevice(TapBackend(vif), loop, config)
    mem_size = opts.mem_size + (opts.pairs - 1) * (24 << 20)
    mem = FlatMemory(mem_size)
    window = DmaWindow(mem, 0x1000, mem_size - 0x1000)
    if opts.transport == "mmio":
        slot = bus.add_mmio(device, mem, dma=window)
    else:
        slot = bus.add_pci(device, mem, msix=opts.transport == "pci", dma=window)
    nic = TapNic(GUEST_IFNAME, netns, queues=config.max_pairs)
    ring = DEFAULT_RING_FEATURES
    if not opts.packed:
        ring &= ~(1 << S.VIRTIO_F_RING_PACKED)
    dma = DmaPool.for_transport(slot.transport)
    driver = VirtioNetDriver(
        slot.transport,
        dma,
        nic,
        ring_features=ring,
        exclude=opts.exclude,
        rx_buf_size=opts.rx_buf_size,
        auto_reconnect=opts.auto_reconnect,
    )
    slot.handler = driver.interrupt
    address = topo.configure_guest(netns, GUEST_IFNAME, 10 + index)
    return Guest(index, netns, address, vif, device, mem, dma, slot, nic, driver)


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
        self.count = guests
        self.options = GuestOptions(
            transport, packed, mtu, pairs, exclude, rx_buf_size, mem_size, auto_reconnect
        )
        self._config = config
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
                netns = self.topology.add_guest_ns(index)
                self.guests.append(self.call(self._build, index, netns))
                self.run(self.guests[-1].driver.start())
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self, index: int, netns: str) -> Guest:
        topo, opts = self.topology, self.options
        return build_guest(topo, self.bus, self.loop, index, netns, opts, self._config)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._thread.is_alive():
                for guest in self.guests:
                    self.call(guest.driver.close)
                    self.call(guest.device.reset)
        finally:
            for guest in self.guests:
                guest.close()
            if self._thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout=30)
            self.loop.close()
            self.topology.__exit__()


# ---------------------------------------------------------------- one process per guest
@dataclass(frozen=True)
class GuestProcess:
    """A guest running in its own process (`ProcessNetStack`)."""

    index: int
    netns: str
    address: str
    process: subprocess.Popen[str]

    def command(self, argv: list[str]) -> list[str]:
        return ns_command(self.netns, argv)


class ProcessNetStack:
    """``with ProcessNetStack(guests=2) as stack:`` each guest in a process of its own;
    ``stats`` holds each guest's device counters once the stack is closed."""

    def __init__(self, *, guests: int = 2, options: GuestOptions | None = None) -> None:
        self.count = guests
        self.options = options or GuestOptions()
        self.topology = NetTopology(mtu=self.options.mtu)
        self.guests: list[GuestProcess] = []
        self.stats: list[dict[str, Any]] = []

    def __enter__(self) -> ProcessNetStack:
        try:
            self.topology.__enter__()
            for index in range(1, self.count + 1):
                self.guests.append(self._spawn(index))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _spawn(self, index: int) -> GuestProcess:
        topo = self.topology
        netns = topo.add_guest_ns(index)
        spec = {"tag": topo.tag, "net": topo.net, "index": index, "netns": netns}
        spec |= asdict(self.options)
        argv = [sys.executable, "-m", __name__, json.dumps(spec)]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], _READY_TIMEOUT)
        if not ready or proc.stdout.readline().strip() != "ready":
            _stop(proc)
            raise RuntimeError(f"guest {index} did not start (exit {proc.poll()})")
        return GuestProcess(index, netns, topo.address(10 + index), proc)

    def __exit__(self, *exc: object) -> None:
        try:
            for guest in self.guests:
                self.stats.append(_stop(guest.process))
        finally:
            self.topology.__exit__()


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Close the child's stdin (its signal to stop); its last line is its counters."""
    try:
        out, _ = proc.communicate(input="", timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {}
    lines = out.strip().splitlines()
    try:
        stats: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return stats


def _serve_guest(spec: dict[str, Any]) -> None:
    """Child side: build guest ``index``, say "ready", serve until stdin closes."""
    topo = NetTopology(mtu=spec.pop("mtu"), tag=spec.pop("tag"), net=spec.pop("net"))
    index, netns = spec.pop("index"), spec.pop("netns")  # the parent removes netns
    opts = GuestOptions(mtu=topo.mtu, **spec)
    loop = asyncio.new_event_loop()
    guest = build_guest(topo, InProcessBus(), loop, index, netns, opts)
    try:
        loop.run_until_complete(guest.driver.start())
        print("ready", flush=True)
        loop.add_reader(sys.stdin.fileno(), loop.stop)
        loop.run_forever()
        stats = guest.device.stats
        counters = {"tx_frames": stats.tx_frames, "tx_bytes": stats.tx_bytes}
        counters |= {"rx_frames": stats.rx_frames, "rx_bytes": stats.rx_bytes}
        counters["interrupts"] = stats.interrupts
        guest.driver.close()
        guest.device.reset()
        print(json.dumps(counters), flush=True)
    finally:
        guest.close()
        loop.close()


if __name__ == "__main__":
    _serve_guest(json.loads(sys.argv[1]))
