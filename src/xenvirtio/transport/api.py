"""The interface every virtio transport shares, on both sides.

Device side (the backend). A device model implements `VirtioDevice` and never learns
which transport serves it (compare firecracker's ``VirtioDevice`` and cloud-hypervisor's
``ActivationContext``). Guest memory, the device queues and the `Interrupt` port reach it
only in ``activate(ctx)``; before that, and after ``reset()``, it has none of them.

    device call order:  ( accept_features? activate
                          ( queue_notify | queue_reset queue_enabled? )* )? reset  ...

A `VirtqueueError` (or `GuestMemoryError`) raised from ``activate`` or ``queue_notify``
means the driver broke the protocol: the transport sets DEVICE_NEEDS_RESET and sends a
configuration change notification (virtio 1.2 2.1.2). Errors found later (an engine
completing a request) go through ``ctx.needs_reset(reason)``.

Driver side (the guest). A guest driver (virtio-blk, -net, -console, -rng) talks to a
`VirtioTransport` and never learns whether PCI, MMIO or XenBus is underneath;
`xenvirtio.transport.probe` runs the initialisation sequence of virtio 1.2 3.1.1 over it.
Every transport also says where the driver's rings and buffers go (``dma``, a
`DmaPages`); ``DmaPool.for_transport(transport)`` allocates from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import Protocol, runtime_checkable

from xenvirtio.mem.api import GuestMemory
from xenvirtio.transport.dma import DmaPages
from xenvirtio.virtio.config import ConfigSpace
from xenvirtio.virtio.queue import DeviceQueue

# -------------------------------------------------------------------------- device side


class Interrupt(Protocol):
    """The port a device model notifies the driver through (principle 8: deciding to
    notify is the queue's ``needs_notify``; delivering goes through here)."""

    def trigger_queue(self, index: int) -> None:
        """A used buffer notification for queue ``index``."""
        ...

    def trigger_config(self) -> None:
        """A configuration change notification (after ``ConfigSpace.update``)."""
        ...


@dataclass(frozen=True, slots=True)
class ActivationContext:
    """What a device model gets at DRIVER_OK.

    ``queues[i]`` is queue ``i``'s device side, or None when the driver did not enable
    it. The transport replaces entries on RING_RESET (``queue_reset`` /
    ``queue_enabled``). ``features`` are the negotiated feature bits.
    """

    mem: GuestMemory
    queues: list[DeviceQueue | None]
    interrupt: Interrupt
    features: int
    needs_reset: Callable[[str], None]


class VirtioDevice(Protocol):
    """What a device model implements (the transport drives it)."""

    @property
    def device_id(self) -> int:
        """The virtio device type (virtio 1.2 5), e.g. ``VirtioDeviceId.BLOCK``."""
        ...

    @property
    def avail_features(self) -> int:
        """Feature bits offered, VIRTIO_F_VERSION_1 included (virtio 1.2 6.2)."""
        ...

    @property
    def queue_max_sizes(self) -> Sequence[int]:
        """Maximum Queue Size of each queue; the length is the number of queues."""
        ...

    @property
    def config(self) -> ConfigSpace:
        """The device-specific configuration space (may be empty)."""
        ...

    def accept_features(self, features: int) -> bool:
        """The device's own FEATURES_OK verdict, after the generic checks of
        virtio 1.2 2.2 (subset of the offer, dependencies, VERSION_1) passed."""
        ...

    def activate(self, ctx: ActivationContext) -> None:
        """DRIVER_OK: start serving. May raise `VirtqueueError`."""
        ...

    def queue_notify(self, index: int) -> None:
        """The driver kicked queue ``index`` (an available buffer notification).
        Called only while activated and the queue is enabled."""
        ...

    def queue_reset(self, index: int) -> None:
        """RING_RESET of one queue (virtio 1.2 2.6.1): forget its state; ``ctx.queues``
        now holds None for it."""
        ...

    def queue_enabled(self, index: int, queue: DeviceQueue) -> None:
        """A queue was (re-)enabled after activation (after RING_RESET)."""
        ...

    def reset(self) -> None:
        """Device reset: drop memory, queues and the interrupt port; back to inactive."""
        ...


@runtime_checkable
class PollableDevice(Protocol):
    """Optional capability of a `VirtioDevice` whose engine completes work on other
    threads (virtio-blk's ``ThreadPoolEngine``). The engine thread calls ``wakeup`` (set
    by the edge serving the device; thread-safe, at most once per pending batch); the
    edge answers by running ``poll`` on the device's own thread, where it may touch its
    queues and `Interrupt` port. A device that completes everything inside
    ``queue_notify`` need not implement it. Edges wire it with `bind_poll`."""

    wakeup: Callable[[], None] | None

    def poll(self) -> None:
        """Finish what the engine completed (device's thread only)."""
        ...


def bind_poll(device: object, schedule: Callable[[Callable[[], None]], object]) -> bool:
    """If ``device`` is a `PollableDevice` without a ``wakeup`` yet, make its wakeups
    run ``device.poll`` through ``schedule`` (e.g. ``loop.call_soon_threadsafe``).
    Returns whether it did; a ``wakeup`` already set is left alone."""
    if not isinstance(device, PollableDevice) or device.wakeup is not None:
        return False
    poll = device.poll

    def wakeup() -> None:
        schedule(poll)

    device.wakeup = wakeup
    return True


# -------------------------------------------------------------------------- driver side


class InterruptFlags(IntFlag):
    """Why the device interrupted: the bits of PCI ISR status (virtio 1.2 4.1.4.5) and
    MMIO InterruptStatus (4.2.2), which agree."""

    NONE = 0
    QUEUE = 1  # a used buffer notification
    CONFIG = 2  # a configuration change notification


class VirtioTransport(Protocol):
    """A guest driver's view of one virtio device, whatever the transport.

    Call order (virtio 1.2 3.1.1; `probe` does steps 1-6 and 8):
    ``reset set_status(ACK) set_status(ACK|DRIVER) get_features set_features
    set_status(..|FEATURES_OK) get_status ( queue_max_size setup_queue enable_queue )*
    set_status(..|DRIVER_OK) ( notify | ack_interrupt | read_config | write_config )*``.
    """

    @property
    def device_id(self) -> int: ...

    @property
    def dma(self) -> DmaPages:
        """The memory the device can reach, by DMA address: where the driver puts its
        rings and buffers (``DmaPool.for_transport``)."""
        ...

    def get_features(self) -> int:
        """All feature bits the device offers."""
        ...

    def set_features(self, features: int) -> None:
        """Write the feature bits the driver accepts (before FEATURES_OK)."""
        ...

    def get_status(self) -> int: ...

    def set_status(self, status: int) -> None: ...

    def reset(self) -> None:
        """Write 0 to the status and wait (bounded) until it reads back 0."""
        ...

    def read_config(self, offset: int, size: int) -> bytes:
        """Device-specific configuration bytes, read with natural-width accesses."""
        ...

    def write_config(self, offset: int, data: bytes) -> None: ...

    @property
    def config_generation(self) -> int: ...

    @property
    def num_queues(self) -> int: ...

    def queue_max_size(self, index: int) -> int:
        """The device's maximum size for queue ``index``; 0 if the queue does not exist."""
        ...

    def setup_queue(self, index: int, size: int, desc: int, driver: int, device: int) -> None:
        """Program size and the three ring addresses (and an interrupt vector)."""
        ...

    def enable_queue(self, index: int) -> None: ...

    def reset_queue(self, index: int) -> None:
        """RING_RESET one queue and wait until the device reports it done."""
        ...

    def notify(self, index: int, data: int | None = None) -> None:
        """Kick queue ``index``. ``data`` is the VIRTIO_F_NOTIFICATION_DATA value when
        that feature was negotiated; otherwise the transport sends the queue index (or
        ``queue_notify_data`` with VIRTIO_F_NOTIF_CONFIG_DATA)."""
        ...

    def ack_interrupt(self) -> InterruptFlags:
        """What happened since the last call (reads and acknowledges the device's
        interrupt status, or collects what MSI-X vectors reported)."""
        ...
