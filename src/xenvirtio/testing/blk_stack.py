"""A whole virtio-blk stack in one process, for tests and benchmarks:

    image file -> BlockFile -> VirtioBlkDevice (engine) -> virtio-mmio / virtio-pci
    device core -> InProcessBus -> transport driver -> VirtioBlkDriver [-> NbdServer]

Everything but the engine's workers runs on one event loop thread the stack owns (the
device's thread and the guest's CPU at once). ``run(coro)`` runs a coroutine there;
``serve_nbd(path)`` exports the first disk's driver over NBD on a Unix socket.

Several images make several disks served by one device-model instance: one engine, one
bus, one loop; each disk has its own guest memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import BlkEngine, SyncEngine, ThreadPoolEngine
from xenvirtio.drivers.blk.driver import DEFAULT_RING_FEATURES, VirtioBlkDriver
from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.grant_dma import XEN_PAGE_SIZE, GrantDmaMemory, grant_dma_addr
from xenvirtio.nbd.server import NbdServer
from xenvirtio.spec import virtio as S
from xenvirtio.testing.inproc_bus import InProcessBus, Slot
from xenvirtio.transport.dma import DmaPool, DmaWindow

R = TypeVar("R")
TransportKind = Literal["mmio", "pci", "pci-intx"]
EngineKind = Literal["sync", "threads"]
GREF_BASE = 0x100  # first grant reference of a grant-DMA guest's memory


@dataclass(eq=False)
class Disk:
    """One device/driver pair of the stack."""

    backing: BlockFile
    device: VirtioBlkDevice
    mem: FlatMemory
    slot: Slot
    driver: VirtioBlkDriver
    dma: DmaPool


class BlkStack:
    """``with BlkStack(image) as stack: stack.run(stack.driver.read(0, 4096))``."""

    def __init__(
        self,
        images: Path | Sequence[Path],
        *,
        transport: TransportKind = "mmio",
        packed: bool = False,
        engine: EngineKind = "threads",
        workers: int = 8,
        config: BlkConfig | None = None,
        exclude: int = 0,
        mem_size: int = 64 << 20,
        auto_reconnect: bool = True,
        grant_dma: bool = False,
    ) -> None:
        self.images = [images] if isinstance(images, Path) else list(images)
        self.transport: TransportKind = transport
        self._packed = packed
        self._engine_kind: EngineKind = engine
        self._workers = workers
        self._config = config or BlkConfig()
        self._exclude = exclude
        self._mem_size = mem_size
        self._auto_reconnect = auto_reconnect
        self._grant_dma = grant_dma
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="blk-stack")
        self.engine: BlkEngine = SyncEngine()
        self.bus = InProcessBus(schedule=self.loop.call_soon_threadsafe)  # engine completions
        self.disks: list[Disk] = []
        self.granted: set[int] = set()  # grant references the device mapped
        self._servers: list[NbdServer] = []

    @property
    def driver(self) -> VirtioBlkDriver:
        return self.disks[0].driver

    @property
    def device(self) -> VirtioBlkDevice:
        return self.disks[0].device

    def run(self, coro: Coroutine[Any, Any, R], timeout: float = 60.0) -> R:
        """Run ``coro`` on the stack's loop and return its result."""
        future: Future[R] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, func: Any, *args: Any) -> Any:
        """Call ``func(*args)`` on the loop thread and return its result."""

        async def call() -> Any:
            return func(*args)

        return self.run(call())

    # ---------------------------------------------------------------- building
    def __enter__(self) -> BlkStack:
        self._thread.start()
        try:
            if self._engine_kind == "threads":
                self.engine = ThreadPoolEngine(self._workers)
            for image in self.images:
                self.disks.append(self.call(self._build, image))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self, image: Path) -> Disk:
        backing = BlockFile(image, read_only=self._config.read_only)
        device = VirtioBlkDevice(backing, self._config, self.engine)
        mem, device_mem, base = self._memory()
        window = DmaWindow(mem, base + 0x1000, self._mem_size - 0x1000)
        if self.transport == "mmio":
            slot = self.bus.add_mmio(device, device_mem, dma=window)
        else:
            slot = self.bus.add_pci(device, device_mem, msix=self.transport == "pci", dma=window)
        ring = DEFAULT_RING_FEATURES
        if not self._packed:
            ring &= ~(1 << S.VIRTIO_F_RING_PACKED)
        dma = DmaPool.for_transport(slot.transport)
        driver = VirtioBlkDriver(
            slot.transport,
            dma,
            ring_features=ring,
            exclude=self._exclude,
            auto_reconnect=self._auto_reconnect,
        )
        slot.handler = driver.interrupt
        return Disk(backing, device, mem, slot, driver, dma)

    def _memory(self) -> tuple[FlatMemory, GuestMemory, int]:
        """The guest's memory as its driver addresses it, the device's view of it, and
        the DMA address of its first byte. With ``grant_dma`` every page is granted
        (consecutive references from `GREF_BASE`) and the device reaches it only
        through grant-DMA addresses and a grant resolver, as an unprivileged backend."""
        if not self._grant_dma:
            mem = FlatMemory(self._mem_size)
            return mem, mem, 0
        host = memoryview(bytearray(self._mem_size))
        base = grant_dma_addr(GREF_BASE)
        pages = self._mem_size // XEN_PAGE_SIZE

        def resolve(gref: int) -> memoryview | None:
            page = gref - GREF_BASE
            if not 0 <= page < pages:
                return None
            self.granted.add(gref)
            return host[page * XEN_PAGE_SIZE : (page + 1) * XEN_PAGE_SIZE]

        return FlatMemory(buffer=host, base=base), GrantDmaMemory(resolve), base

    def serve_nbd(self, path: Path, disk: int = 0, **server_args: Any) -> str:
        """Export a disk's driver over NBD on ``path``; returns the NBD URI."""

        async def start() -> None:
            server = NbdServer(self.disks[disk].driver, **server_args)
            await server.start_unix(path)
            self._servers.append(server)

        self.run(start())
        return f"nbd+unix:///?socket={path}"

    def __exit__(self, *exc: object) -> None:
        try:
            if self._thread.is_alive():
                for server in self._servers:
                    self.run(server.close())
                for disk in self.disks:
                    self.call(disk.driver.close)
        finally:
            self.engine.close()
            for disk in self.disks:
                disk.backing.close()
            if self._thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout=30)
            self.loop.close()
