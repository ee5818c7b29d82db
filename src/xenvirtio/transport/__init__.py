"""Virtio transports: how a device model and a guest driver reach each other.

`api` is the interface both sides share across transports (`VirtioDevice`,
`ActivationContext`, `Interrupt`; `VirtioTransport` for guest drivers), `core` the
device-side state every transport keeps, `probe` the driver-side initialisation.
Transports: `pci` (modern virtio-pci), `mmio` (virtio-mmio version 2). All of them are
sans-I/O: accesses come in as calls, interrupts and kicks go out as `events`.
"""

from xenvirtio.transport.api import (
    ActivationContext,
    Interrupt,
    InterruptFlags,
    VirtioDevice,
    VirtioTransport,
)
from xenvirtio.transport.core import DeviceTransportCore
from xenvirtio.transport.events import (
    BarDecodeChanged,
    DeviceActivated,
    DeviceReset,
    EventQueue,
    InterruptLine,
    MsiMessage,
    NeedsReset,
    QueueNotified,
    TransportEvent,
)
from xenvirtio.transport.probe import FeaturesRefusedError, ProbeError, attach_queue, kick, probe

__all__ = [
    "ActivationContext",
    "BarDecodeChanged",
    "DeviceActivated",
    "DeviceReset",
    "DeviceTransportCore",
    "EventQueue",
    "FeaturesRefusedError",
    "Interrupt",
    "InterruptFlags",
    "InterruptLine",
    "MsiMessage",
    "NeedsReset",
    "ProbeError",
    "QueueNotified",
    "TransportEvent",
    "VirtioDevice",
    "VirtioTransport",
    "attach_queue",
    "kick",
    "probe",
]
