"""What the guest kernel does with each kind of device once its transport is open.

- disk: `VirtioBlkDriver`, served as an NBD export on ``<name>.nbd``;
- net: `VirtioNetDriver` whose NIC is a TAP ``ifname`` in the domain's network
  namespace (`runtime.network.guest_netns`), with the spec's address (the MAC comes
  from the device's configuration space, virtio 1.2 5.1.4.2);
- console: `VirtioConsoleDriver` and a line-oriented getty: what the host types is
  echoed, and each line is answered ``<domain name>: <line>``;
- rng: `VirtioRngDriver` behind a Unix socket ``<name>.rng``: a client writes a byte
  count in ASCII and a newline, and reads that many random bytes from the device
  (at most `MAX_RNG_REQUEST` per line); it may ask again.

Each `Service` knows how to close what it brought up; all run on the kernel's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from xenvirtio.drivers.blk.driver import DEFAULT_RING_FEATURES as BLK_RINGS
from xenvirtio.drivers.blk.driver import VirtioBlkDriver
from xenvirtio.drivers.console.driver import DEFAULT_RING_FEATURES as CONSOLE_RINGS
from xenvirtio.drivers.console.driver import VirtioConsoleDriver
from xenvirtio.drivers.net import TapNic, VirtioNetDriver
from xenvirtio.drivers.net.driver import DEFAULT_RING_FEATURES as NET_RINGS
from xenvirtio.drivers.rng.driver import DEFAULT_RING_FEATURES as RNG_RINGS
from xenvirtio.drivers.rng.driver import VirtioRngDriver
from xenvirtio.nbd.server import NbdServer
from xenvirtio.netif.netlink import Netlink
from xenvirtio.runtime.guest_transport import OpenedTransport
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.network import guest_netns
from xenvirtio.runtime.specs import ConsoleSpec, DeviceSpec, DiskSpec, NetSpec, Ring, RngSpec
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.features import bit

log = logging.getLogger(__name__)
MAX_RNG_REQUEST: Final = 1 << 20
MAX_LINE: Final = 4096


class Driver(Protocol):
    features: int

    def close(self) -> None: ...


@dataclass
class Service:
    """A device the kernel brought up, and what to undo when it goes (last first)."""

    spec: DeviceSpec
    opened: OpenedTransport
    driver: Driver
    undo: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def ring(self) -> str:
        return "packed" if self.driver.features & bit(S.VIRTIO_F_RING_PACKED) else "split"

    @property
    def reconnects(self) -> int:
        return self.driver.reconnects if isinstance(self.driver, VirtioBlkDriver) else 0

    async def close(self) -> None:
        for undo in reversed(self.undo):
            with contextlib.suppress(Exception):
                await undo()
        with contextlib.suppress(Exception):
            self.driver.close()
        with contextlib.suppress(Exception):
            self.opened.close()


def rings(ring: Ring, allowed: int) -> int:
    """``allowed`` without RING_PACKED when the spec asks for split rings."""
    return allowed & ~bit(S.VIRTIO_F_RING_PACKED) if ring == "split" else allowed


@dataclass(frozen=True)
class GuestContext:
    domain: DomainDir
    name: str  # the domain's name, for the getty's answers


async def start_service(spec: DeviceSpec, opened: OpenedTransport, ctx: GuestContext) -> Service:
    """Probe the driver for ``spec`` on ``opened`` and serve what it gives the host."""
    if opened.transport.device_id != _DEVICE_IDS[spec.kind]:
        raise ValueError(f"device id {opened.transport.device_id} is not a {spec.kind}")
    if isinstance(spec, DiskSpec):
        return await _disk(spec, opened, ctx)
    if isinstance(spec, NetSpec):
        return await _net(spec, opened, ctx)
    if isinstance(spec, ConsoleSpec):
        return _console(spec, opened, ctx)
    if isinstance(spec, RngSpec):
        return await _rng(spec, opened, ctx)
    raise ValueError(f"no driver for a {spec.kind}")  # pragma: no cover


async def _disk(spec: DiskSpec, opened: OpenedTransport, ctx: GuestContext) -> Service:
    driver = VirtioBlkDriver(opened.transport, ring_features=rings(spec.ring, BLK_RINGS),
                             queue_size=64)  # fmt: skip
    opened.set_handler(driver.interrupt)
    service = Service(spec, opened, driver)
    server = NbdServer(driver, export_name=spec.vdev, description=f"{spec.transport} disk")
    try:
        await server.start_unix(ctx.domain.nbd_socket(spec.name))
    except BaseException:
        await service.close()
        raise
    service.undo.append(server.close)
    return service


async def _net(spec: NetSpec, opened: OpenedTransport, ctx: GuestContext) -> Service:
    netns = guest_netns(ctx.domain.run_dir, ctx.domain.domid)
    nic = TapNic(spec.ifname, netns, queues=spec.queues)
    try:
        driver = VirtioNetDriver(opened.transport, None, nic, queue_size=64, tx_buffers=8,
                                 ring_features=rings(spec.ring, NET_RINGS))  # fmt: skip
    except BaseException:
        nic.close()
        raise
    opened.set_handler(driver.interrupt)
    service = Service(spec, opened, driver, [_sync(nic.close)])
    try:
        await driver.start()
        if spec.ip:
            address = ipaddress.ip_interface(spec.ip)
            with Netlink(netns) as nl:
                nl.add_address(spec.ifname, str(address.ip), address.network.prefixlen)
                nl.set_link(spec.ifname, up=True)
    except BaseException:
        await service.close()
        raise
    return service


def _console(spec: ConsoleSpec, opened: OpenedTransport, ctx: GuestContext) -> Service:
    driver = VirtioConsoleDriver(opened.transport, ring_features=rings(spec.ring, CONSOLE_RINGS))
    opened.set_handler(driver.interrupt)
    task = asyncio.get_running_loop().create_task(_getty(driver, ctx.name))
    return Service(spec, opened, driver, [_cancel(task)])


async def _getty(driver: VirtioConsoleDriver, name: str) -> None:
    """A terminal's line discipline and a shell of one command: echo what is typed
    (backspace erases), and answer each line ending in CR or LF. A line is cut at
    `MAX_LINE` bytes."""
    prefix = f"{name}: ".encode()
    line = bytearray()
    while chunk := await driver.reader.read(MAX_LINE):
        out = bytearray()
        for byte in chunk:
            if byte in (0x0D, 0x0A):
                out += b"\r\n"
                if line:
                    out += prefix + line + b"\r\n"
                line.clear()
            elif byte in (0x08, 0x7F):
                if line:
                    line.pop()
                    out += b"\b \b"
            elif len(line) < MAX_LINE:
                line.append(byte)
                out.append(byte)
        driver.writer.write(bytes(out))
        await driver.writer.drain()


async def _rng(spec: RngSpec, opened: OpenedTransport, ctx: GuestContext) -> Service:
    driver = VirtioRngDriver(opened.transport, ring_features=rings(spec.ring, RNG_RINGS))
    opened.set_handler(driver.interrupt)
    service = Service(spec, opened, driver)
    lock = asyncio.Lock()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _rng_client(driver, lock, reader, writer)
        finally:
            writer.close()

    path = ctx.domain.rng_socket(spec.name)
    try:
        server = await asyncio.start_unix_server(client, path, limit=64)
    except BaseException:
        await service.close()
        raise

    async def close() -> None:
        server.close()
        with contextlib.suppress(OSError):
            path.unlink()

    service.undo.append(close)
    return service


async def _rng_client(
    driver: VirtioRngDriver,
    lock: asyncio.Lock,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """One client's requests, one after the other, until it closes or asks badly."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            return
        text = line.strip()
        if not text.isdigit() or not 0 < int(text) <= MAX_RNG_REQUEST:
            return
        async with lock:
            data = await driver.read(int(text))
        writer.write(data)
        await writer.drain()


def _sync(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        fn()

    return run


def _cancel(task: asyncio.Task[None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run


_DEVICE_IDS: Final = {
    "disk": S.VirtioDeviceId.BLOCK,
    "net": S.VirtioDeviceId.NET,
    "console": S.VirtioDeviceId.CONSOLE,
    "rng": S.VirtioDeviceId.ENTROPY,
}
