"""What a device-side transport core hands back to whoever drives it: events.

A transport never delivers anything itself. An MSI write, a level change on an interrupt
line, a BAR moving in guest-physical space, a kick that reached the device model: each is
a frozen event appended to the transport's `EventQueue`. The edge that serves the guest's
accesses (Xen ioreqs, or an in-process bus in tests) drains them with ``take_events()``
after every access and acts on them (``xendevicemodel_inject_msi``, ``set_irq_level``,
``map_io_range_to_ioreq_server`` ...).

Interrupts a device model raises outside an access (an I/O engine finishing later) are
queued the same way; the optional ``wakeup`` callback tells the edge to drain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MsiMessage:
    """Deliver one MSI-X message: a DWORD write of ``data`` at ``address`` (PCI)."""

    address: int
    data: int


@dataclass(frozen=True, slots=True)
class InterruptLine:
    """The level of the function's interrupt line changed (PCI INT#x, MMIO SPI/GSI)."""

    asserted: bool


@dataclass(frozen=True, slots=True)
class QueueNotified:
    """The driver kicked queue ``index`` and the device model was told. ``data`` is the
    value written (vq index, ``queue_notify_data`` or VIRTIO_F_NOTIFICATION_DATA)."""

    index: int
    data: int


@dataclass(frozen=True, slots=True)
class NeedsReset:
    """The device set DEVICE_NEEDS_RESET (virtio 1.2 2.1.2); ``reason`` says why."""

    reason: str


@dataclass(frozen=True, slots=True)
class DeviceActivated:
    """The driver set DRIVER_OK and the device model was activated with ``features``."""

    features: int


@dataclass(frozen=True, slots=True)
class DeviceReset:
    """The driver reset the device (wrote 0 to the status field)."""


@dataclass(frozen=True, slots=True)
class BarDecodeChanged:
    """PCI: memory BAR ``bar`` now decodes ``[base, base + size)``, or nothing when
    ``base`` is None (memory decoding off, or the BAR not yet assigned)."""

    bar: int
    base: int | None
    size: int


TransportEvent = (
    MsiMessage
    | InterruptLine
    | QueueNotified
    | NeedsReset
    | DeviceActivated
    | DeviceReset
    | BarDecodeChanged
)


class EventQueue:
    """The outbox of one transport instance, drained by `take`."""

    __slots__ = ("_events", "wakeup")

    def __init__(self, wakeup: Callable[[], None] | None = None) -> None:
        self._events: list[TransportEvent] = []
        self.wakeup = wakeup

    def push(self, event: TransportEvent) -> None:
        self._events.append(event)
        if self.wakeup is not None:
            self.wakeup()

    def take(self) -> list[TransportEvent]:
        events, self._events = self._events, []
        return events

    def __len__(self) -> int:
        return len(self._events)
