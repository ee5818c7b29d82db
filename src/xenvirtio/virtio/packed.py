"""Packed virtqueue (virtio 1.2 2.8): `PackedDeviceQueue` (device side, in
`packed_device`) and `PackedDriverQueue` (driver side, in `packed_driver`), sharing the
wire helpers of `packed_ring`. Same constructors and protocols as the split ring
(`xenvirtio.virtio.queue.DeviceQueue` / `DriverQueue`).
"""

from __future__ import annotations

from xenvirtio.virtio.packed_device import PackedDeviceQueue
from xenvirtio.virtio.packed_driver import PackedDriverQueue
from xenvirtio.virtio.packed_ring import check_packed_config

__all__ = ["PackedDeviceQueue", "PackedDriverQueue", "check_packed_config"]
