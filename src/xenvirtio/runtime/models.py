"""Device models for specs: what a backend serves for each kind of device.

`open_model(spec, engine)` returns the `VirtioDevice` and what to close when the device
goes. Net, console and rng models join `_OPENERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import DEFAULT_RING_FEATURES, BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import BlkEngine
from xenvirtio.runtime.specs import DeviceSpec, DiskSpec, Ring
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


def open_model(spec: DeviceSpec, engine: BlkEngine) -> Model:
    """The device model ``spec`` describes (OSError if its backing cannot be opened)."""
    if isinstance(spec, DiskSpec):
        return _open_disk(spec, engine)
    raise ValueError(f"no device model for a {spec.kind}")
