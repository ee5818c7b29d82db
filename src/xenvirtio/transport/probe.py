"""Driver-side steps every guest driver shares, over any `VirtioTransport`.

`probe` is the device initialisation of virtio 1.2 3.1.1:

    1 reset   2 ACKNOWLEDGE   3 DRIVER   4 read features, write the accepted subset
    5 FEATURES_OK   6 re-read status: FEATURES_OK must still be set
    7 device-specific setup (queues, config)   8 DRIVER_OK

and on any failure sets FAILED (3.1.1: the driver SHOULD set FAILED when it gives up).
`attach_queue` lays a queue out in guest memory and programs it (step 7);
`kick` publishes buffers and notifies only if the device wants it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.transport.api import VirtioTransport
from xenvirtio.virtio.config import read_consistent
from xenvirtio.virtio.features import driver_select
from xenvirtio.virtio.queue import (
    DriverQueue,
    IndirectPool,
    QueueConfig,
    RingFormat,
    make_driver_queue,
    ring_addrs,
)


class ProbeError(Exception):
    """Device initialisation failed; the device was left with FAILED set."""


class FeaturesRefusedError(ProbeError):
    """The device did not keep FEATURES_OK set (virtio 1.2 3.1.1 step 6)."""


def probe(
    transport: VirtioTransport,
    wanted: int,
    setup: Callable[[int], None] | None = None,
    dependencies: Mapping[int, int] | None = None,
) -> int:
    """Initialise the device; returns the negotiated features.

    ``wanted`` is every feature the driver understands (VIRTIO_F_VERSION_1 is required:
    there is no legacy interface). ``setup(features)`` runs step 7."""
    transport.reset()
    ack = DeviceStatus.ACKNOWLEDGE
    transport.set_status(ack)
    transport.set_status(ack | DeviceStatus.DRIVER)
    status = ack | DeviceStatus.DRIVER
    try:
        accepted = driver_select(transport.get_features(), wanted, dependencies)
        if not accepted >> S.VIRTIO_F_VERSION_1 & 1:
            raise ProbeError("device does not offer VIRTIO_F_VERSION_1")
        transport.set_features(accepted)
        status |= DeviceStatus.FEATURES_OK
        transport.set_status(status)
        if not transport.get_status() & DeviceStatus.FEATURES_OK:
            raise FeaturesRefusedError(f"device refused features {accepted:#x}")
        if setup is not None:
            setup(accepted)
    except Exception:
        transport.set_status(transport.get_status() | DeviceStatus.FAILED)
        raise
    transport.set_status(status | DeviceStatus.DRIVER_OK)
    return accepted


def attach_queue(
    transport: VirtioTransport,
    mem: GuestMemory,
    index: int,
    features: int,
    base: int,
    size: int | None = None,
    indirect: IndirectPool | None = None,
) -> DriverQueue[Any]:
    """Lay queue ``index`` out at ``base`` (aligned as its format needs), zero it, tell
    the device where it is and enable it. ``size`` defaults to the device's maximum;
    split rings round it down to a power of two (2.7)."""
    maximum = transport.queue_max_size(index)
    if not maximum:
        raise ProbeError(f"queue {index} does not exist")
    size = min(size or maximum, maximum)
    fmt = RingFormat.from_features(features)
    if fmt is RingFormat.SPLIT:
        size = 1 << (size.bit_length() - 1)
    addrs = ring_addrs(fmt is RingFormat.PACKED, base, size)
    cfg = QueueConfig(size, addrs.desc, addrs.driver, addrs.device, features, index)
    queue = make_driver_queue(fmt, cfg, indirect)
    queue.init_rings(mem)
    transport.setup_queue(index, size, addrs.desc, addrs.driver, addrs.device)
    transport.enable_queue(index)
    return queue


def queue_footprint(features: int, base: int, size: int) -> int:
    """The first address after a queue `attach_queue` would place at ``base``."""
    return ring_addrs(RingFormat.from_features(features) is RingFormat.PACKED, base, size).end


def kick(transport: VirtioTransport, queue: DriverQueue[Any], mem: GuestMemory) -> bool:
    """Publish added buffers; notify the device if it asked to be (returns whether)."""
    if not queue.kick_prepare(mem):
        return False
    cfg = queue.config
    data = queue.notification_data() if cfg.notification_data else None
    transport.notify(cfg.index, data)
    return True


def read_config_consistent(transport: VirtioTransport, offset: int, size: int) -> bytes:
    """Configuration bytes read under a stable ``config_generation`` (virtio 1.2 2.5.1)."""
    return read_consistent(
        lambda: transport.config_generation, lambda: transport.read_config(offset, size)
    )
