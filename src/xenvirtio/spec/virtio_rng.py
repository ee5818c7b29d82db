"""Constants of the virtio entropy device (virtio 1.2 5.4).

The device has one virtqueue, no feature bits of its own and no configuration space:
the driver posts device-writable buffers and the device fills them with random bytes.
"""

from __future__ import annotations

from typing import Final

# -- Virtqueues (5.4.2) -------------------------------------------------------------------
REQUESTQ: Final = 0
NUM_QUEUES: Final = 1

# -- Feature bits (5.4.3): none defined; configuration layout (5.4.4): none defined ------
VIRTIO_RNG_CONFIG_SIZE: Final = 0
