"""Device models for specs: what a backend serves for each kind of device.

`open_model(spec, ctx)` returns the `VirtioDevice` and what to close when the device
goes; it runs on the backend's loop (`ModelContext.loop`), where the models serve:

- disk: `VirtioBlkDevice` on the image, I/O on the shared engine;
- net: `VirtioNetDevice` on a TAP ``vif<domid>.<n>`` of the host's backend network
  namespace, enslaved to the NIC's bridge (`runtime.network`);
- console: `VirtioConsoleDevice` with port 0 on a new pty, whose path is written to
  ``<run-dir>/domains/<domid>/<name>.pty`` (`DomainDir.pty_file`);
- rng: `VirtioRngDevice` on the host CSPRNG, rate-limited if the spec says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import DEFAULT_RING_FEATURES, BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import BlkEngine
from xenvirtio.devices.console.config import DEFAULT_RING_FEATURES as CONSOLE_RINGS
from xenvirtio.devices.console.config import ConsoleConfig
from xenvirtio.devices.console.device import VirtioConsoleDevice
from xenvirtio.devices.console.engine import PtyPort
from xenvirtio.devices.net import NetConfig, TapBackend, VirtioNetDevice
from xenvirtio.devices.net.config import DEFAULT_RING_FEATURES as NET_RINGS
from xenvirtio.devices.net.config import parse_mac
from xenvirtio.devices.rng.config import DEFAULT_RING_FEATURES as RNG_RINGS
from xenvirtio.devices.rng.config import RngConfig
from xenvirtio.devices.rng.device import VirtioRngDevice
from xenvirtio.devices.rng.engine import LoopTimer, OsEntropy
from xenvirtio.devices.rng.ratelimit import RateLimit
from xenvirtio.netif.netlink import Netlink
from xenvirtio.netif.netns import run_in_netns
from xenvirtio.netif.tap import Tap
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.network import backend_netns, backend_tap
from xenvirtio.runtime.specs import ConsoleSpec, DeviceSpec, DiskSpec, NetSpec, Ring, RngSpec
from xenvirtio.spec import virtio as S
from xenvirtio.transport.api import VirtioDevice
from xenvirtio.virtio.features import bit


@dataclass
class Model:
    device: VirtioDevice
    close: Callable[[], None]


def ring_offer(ring: Ring, offer: int) -> int:
    """The ring features a device offers for ``ring``: "split" withholds RING_PACKED, so
    the driver must use split rings; "packed" and "auto" offer both (a driver that can
    takes packed)."""
    return offer & ~bit(S.VIRTIO_F_RING_PACKED) if ring == "split" else offer


@dataclass(frozen=True)
class ModelContext:
    """What models are opened with: the disks' engine, the backend's loop, and the
    domain's directory (None: no run directory, so no NIC or console)."""

    engine: BlkEngine
    loop: asyncio.AbstractEventLoop
    domain: DomainDir | None


def _open_disk(spec: DiskSpec, engine: BlkEngine) -> Model:
    backing = BlockFile(spec.image, read_only=spec.read_only)
    try:
        config = BlkConfig(
            read_only=spec.read_only,
            num_queues=spec.queues,
            serial=spec.serial,
            ring_features=ring_offer(spec.ring, DEFAULT_RING_FEATURES),
        )
        device = VirtioBlkDevice(backing, config, engine=engine)
    except BaseException:
        backing.close()
        raise
    return Model(device, backing.close)


def _domain(ctx: ModelContext, spec: DeviceSpec) -> DomainDir:
    if ctx.domain is None:
        raise ValueError(f"{spec.name}: a {spec.kind} needs the host's run directory")
    return ctx.domain


def _open_net(spec: NetSpec, ctx: ModelContext) -> Model:
    domain = _domain(ctx, spec)
    netns = backend_netns(domain.run_dir)
    vif = Tap.open(backend_tap(domain.domid, spec), queues=spec.queues, netns=netns)
    try:
        _enslave(netns, vif.name, spec)
        config = NetConfig(mac=parse_mac(spec.mac), mtu=spec.mtu, max_pairs=spec.queues,
                           ring_features=ring_offer(spec.ring, NET_RINGS))  # fmt: skip
        device = VirtioNetDevice(TapBackend(vif), ctx.loop, config)
    except BaseException:
        vif.close()
        raise

    def close() -> None:
        with contextlib.suppress(Exception):
            device.reset()
        vif.close()

    return Model(device, close)


def _enslave(netns: str, ifname: str, spec: NetSpec) -> None:
    """The TAP onto its bridge, up. Netlink is opened on a thread that entered the
    namespace rather than with ``Netlink(netns)``: that forks a helper, and a forked
    copy of this process can write into the loop's signal wake-up fd (the helper's
    SIGTERM would then stop the backend)."""

    def on_bridge() -> None:
        with Netlink() as nl:
            nl.set_link(ifname, mtu=spec.mtu, master=spec.bridge, up=True)

    run_in_netns(netns, on_bridge)


def _open_console(spec: ConsoleSpec, ctx: ModelContext) -> Model:
    domain = _domain(ctx, spec)
    config = ConsoleConfig(ring_features=ring_offer(spec.ring, CONSOLE_RINGS))
    device = VirtioConsoleDevice(config)
    port = PtyPort(device, ctx.loop)
    published = domain.pty_file(spec.name)
    try:
        _write_atomic(published, port.path)
    except BaseException:
        port.close()
        raise

    def close() -> None:
        with contextlib.suppress(OSError):
            published.unlink()
        port.close()

    return Model(device, close)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _open_rng(spec: RngSpec, ctx: ModelContext) -> Model:
    limit = RateLimit(spec.rate, spec.burst or spec.rate) if spec.rate else None
    config = RngConfig(rate_limit=limit, ring_features=ring_offer(spec.ring, RNG_RINGS))
    timer = LoopTimer(ctx.loop)
    device = VirtioRngDevice(OsEntropy(), config, timer)
    return Model(device, timer.cancel)


def open_model(spec: DeviceSpec, ctx: ModelContext) -> Model:
    """The device model ``spec`` describes (OSError if its backing cannot be opened)."""
    if isinstance(spec, DiskSpec):
        return _open_disk(spec, ctx.engine)
    if isinstance(spec, NetSpec):
        return _open_net(spec, ctx)
    if isinstance(spec, ConsoleSpec):
        return _open_console(spec, ctx)
    if isinstance(spec, RngSpec):
        return _open_rng(spec, ctx)
    raise ValueError(f"no device model for a {spec.kind}")
