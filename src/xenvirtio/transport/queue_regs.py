"""The per-queue registers a driver programs (virtio 1.2 4.1.4.3 / 4.2.2): what
`DeviceTransportCore` keeps for each queue, and the names transports use for them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

NO_VECTOR = 0xFFFF  # VIRTIO_MSI_NO_VECTOR (virtio 1.2 4.1.5.1.2): the event is unmapped


class QueueField(Enum):
    MAX_SIZE = "max_size"  # read-only
    SIZE = "size"
    ENABLE = "enable"
    DESC_LO = "desc_lo"
    DESC_HI = "desc_hi"
    DRIVER_LO = "driver_lo"
    DRIVER_HI = "driver_hi"
    DEVICE_LO = "device_lo"
    DEVICE_HI = "device_hi"
    VECTOR = "vector"  # MSI-X vector (PCI); the transport validates it
    NOTIFY_DATA = "notify_data"  # read-only
    RESET = "reset"


ADDR_FIELDS = {
    QueueField.DESC_LO: ("desc", 0),
    QueueField.DESC_HI: ("desc", 32),
    QueueField.DRIVER_LO: ("driver", 0),
    QueueField.DRIVER_HI: ("driver", 32),
    QueueField.DEVICE_LO: ("device", 0),
    QueueField.DEVICE_HI: ("device", 32),
}


@dataclass(slots=True)
class QueueRegs:
    """One queue's registers as the driver sees them."""

    index: int
    max_size: int
    notify_data: int
    size: int = 0
    enable: bool = False
    desc: int = 0
    driver: int = 0
    device: int = 0
    vector: int = NO_VECTOR

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Reset values (virtio 1.2 4.1.4.3.1): size = maximum, disabled, unmapped."""
        self.size = self.max_size
        self.enable = False
        self.desc = self.driver = self.device = 0
        self.vector = NO_VECTOR
