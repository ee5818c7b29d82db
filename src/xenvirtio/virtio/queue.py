"""The interface both virtqueue formats share: errors, configuration, chains, and the
device-side and driver-side queue protocols (virtio 1.2 2.6-2.8).

Split rings live in `xenvirtio.virtio.split` (`SplitDeviceQueue`, `SplitDriverQueue`),
packed rings in `xenvirtio.virtio.packed` (`PackedDeviceQueue`, `PackedDriverQueue`).
Both take the same constructor arguments:

    DeviceQueue:  Cls(cfg: QueueConfig)
    DriverQueue:  Cls(cfg: QueueConfig, indirect: IndirectPool | None = None)

A queue holds only its own state (indices, wrap counters, free lists, tokens). It never
owns guest memory: every method that touches the ring takes ``mem`` (a `GuestMemory`).
A queue may cache zero-copy views of its ring areas for the memory object it was last
called with; `reset()` (device) / `detach_unused()` (driver) drop that cache.

Call order, as a grammar (``*`` any number, ``?`` optional, ``|`` either):

    device:  ( (pop | pop_batch)* (push_used | push_used_batch)* needs_notify? )*
             with  disable_notification ... enable_notification -> re-poll if True
             ending in  reset  (device reset or RING_RESET), after which it starts over.
    driver:  init_rings ( add* kick_prepare? | get_used* | get_used_batch
                          | disable_cb | enable_cb -> poll again if True )*
             ending in  detach_unused init_rings  (device reset or RING_RESET).

Deciding whether to notify is pure (`needs_notify`, `kick_prepare`); the caller delivers the
interrupt or the kick through its injected port. A `VirtqueueError` from a device-side
method means the driver broke the protocol: the device sets DEVICE_NEEDS_RESET
(virtio 1.2 2.1.2) and uses the queue no more until reset. Driver-side queues latch
`broken` on the first `VirtqueueError` (as Linux's virtio_ring does); from then on they
raise `QueueBrokenError` until `detach_unused` + `init_rings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.layout import (
    IndirectPool,
    RingAddrs,
    RingSizes,
    packed_ring_sizes,
    ring_addrs,
    split_ring_sizes,
)

if TYPE_CHECKING:
    from xenvirtio.virtio.chain import Reader, Writer

T = TypeVar("T")

__all__ = [
    "IndirectPool",
    "RingAddrs",
    "RingFormat",
    "RingSizes",
    "packed_ring_sizes",
    "ring_addrs",
    "split_ring_sizes",
]

# --------------------------------------------------------------------------- errors


class VirtqueueError(Exception):
    """The other side broke the virtqueue protocol; the queue is unusable until reset."""


class QueueConfigError(VirtqueueError):
    """Queue size or ring address the driver chose is invalid (virtio 1.2 2.7, 2.8)."""


class RingAccessError(VirtqueueError):
    """A ring area (descriptor table, avail/used ring, event area) is not accessible."""


class InvalidAvailIdx(VirtqueueError):
    """avail idx moved more than Queue Size past the device's position.

    A driver can have at most Queue Size buffers outstanding (virtio 1.2 2.7.6); a larger
    jump is garbage, and trusting it would make the device walk stale ring entries over
    and over (a denial of service against a shared backend).
    """


class InvalidHeadError(VirtqueueError):
    """A descriptor index (avail ring entry or ``next``) is >= Queue Size (2.7.5), or a
    packed buffer id is not one the driver may use."""


class DescriptorLoopError(VirtqueueError):
    """A chain revisits a descriptor: the walk ran past the table's entry count."""


class ChainTooLongError(VirtqueueError):
    """A chain has more descriptors than Queue Size (virtio 1.2 2.7.5.3.1; packed: 2.8)."""


class ChainLengthOverflowError(VirtqueueError):
    """The chain's total length exceeds 2**32 - 1 bytes (virtio 1.2 2.7.5.2)."""


class DescriptorOrderError(VirtqueueError):
    """A device-readable descriptor follows a device-writable one (virtio 1.2 2.7.4.2)."""


class DescriptorAddressError(VirtqueueError):
    """A buffer's address/length is out of range, overflowing or unmapped.

    ``mem_error`` is the underlying `GuestMemoryError` (also the ``__cause__``) when the
    check came from guest memory; None when the address arithmetic itself overflowed.
    """

    def __init__(self, message: str, mem_error: GuestMemoryError | None = None) -> None:
        super().__init__(message)
        self.mem_error = mem_error


class IndirectTableError(VirtqueueError):
    """Malformed indirect descriptor (virtio 1.2 2.7.5.3.1; packed: 2.8): INDIRECT not
    negotiated, table length zero or not a multiple of 16, or INDIRECT with NEXT."""


class NestedIndirectError(IndirectTableError):
    """An indirect table contains an INDIRECT descriptor (virtio 1.2 2.7.5.3.1)."""


class PackedRingError(VirtqueueError):
    """Packed ring descriptor flags or wrap counters out of step (virtio 1.2 2.8)."""


class InvalidUsedError(VirtqueueError):
    """Driver side: the device returned an unknown id, a bad length, or moved used idx
    beyond what was outstanding."""


class ChainExhaustedError(VirtqueueError):
    """A device read or wrote past the end of a chain's readable/writable segments: the
    driver supplied a buffer too short for the request (devices may answer with an error
    status instead of failing the queue)."""


class QueueBrokenError(VirtqueueError):
    """Driver side: the queue latched `broken` after an earlier `VirtqueueError`."""


class QueueFullError(Exception):
    """Driver side: not enough free descriptors for this buffer (not a protocol error)."""


# --------------------------------------------------------------------------- config


class RingFormat(Enum):
    """Virtqueue memory format: split (virtio 1.2 2.7) or packed (2.8)."""

    SPLIT = "split"
    PACKED = "packed"

    @classmethod
    def from_features(cls, features: int) -> RingFormat:
        """The format the negotiated features select (VIRTIO_F_RING_PACKED)."""
        return cls.PACKED if features >> S.VIRTIO_F_RING_PACKED & 1 else cls.SPLIT


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """What the driver configured for one queue, plus the negotiated feature bits.

    ``driver_addr`` is the avail ring (split) or the driver event suppression area
    (packed); ``device_addr`` is the used ring (split) or the device event suppression
    area (packed). ``index`` is the queue's number (for NOTIFICATION_DATA). These values
    come from the driver, so queues validate them (`QueueConfigError`).
    """

    size: int
    desc_addr: int
    driver_addr: int
    device_addr: int
    features: int = 1 << S.VIRTIO_F_VERSION_1
    index: int = 0

    def has(self, bit: int) -> bool:
        """Whether feature ``bit`` was negotiated."""
        return bool(self.features >> bit & 1)

    @property
    def event_idx(self) -> bool:
        return self.has(S.VIRTIO_RING_F_EVENT_IDX)

    @property
    def indirect_desc(self) -> bool:
        return self.has(S.VIRTIO_RING_F_INDIRECT_DESC)

    @property
    def in_order(self) -> bool:
        return self.has(S.VIRTIO_F_IN_ORDER)

    @property
    def notification_data(self) -> bool:
        return self.has(S.VIRTIO_F_NOTIFICATION_DATA)

    @property
    def ring_format(self) -> RingFormat:
        return RingFormat.from_features(self.features)


# --------------------------------------------------------------------------- chains


class DescriptorChain:
    """One buffer the device popped: validated, copied segments (no double fetch).

    ``head`` is the split head index or the packed buffer id; ``readable`` / ``writable``
    are ``(addr, len)`` segments in chain order; ``desc_count`` counts the descriptors the
    chain occupies in the ring (an indirect table counts as one), which packed used
    handling and IN_ORDER need. Created only by device queues; treat as immutable.
    """

    __slots__ = ("desc_count", "head", "readable", "readable_len", "writable", "writable_len")

    def __init__(
        self,
        head: int,
        readable: tuple[tuple[int, int], ...],
        writable: tuple[tuple[int, int], ...],
        readable_len: int,
        writable_len: int,
        desc_count: int,
    ) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.readable_len = readable_len
        self.writable_len = writable_len
        self.desc_count = desc_count

    def reader(self, mem: GuestMemory) -> Reader:
        """A stream over the device-readable segments."""
        from xenvirtio.virtio.chain import Reader

        return Reader(mem, self.readable)

    def writer(self, mem: GuestMemory) -> Writer:
        """A stream over the device-writable segments."""
        from xenvirtio.virtio.chain import Writer

        return Writer(mem, self.writable)

    def __repr__(self) -> str:
        return (
            f"DescriptorChain(head={self.head}, readable={self.readable}, "
            f"writable={self.writable}, desc_count={self.desc_count})"
        )


# --------------------------------------------------------------------------- protocols


class DeviceQueue(Protocol):
    """The device side of one virtqueue. See the module docstring for the call order."""

    config: QueueConfig
    next_avail: int  # next avail position to pop (packed: bit 15 = wrap counter)
    next_used: int  # next used position to fill (packed: bit 15 = wrap counter)

    def pop(self, mem: GuestMemory) -> DescriptorChain | None:
        """The next available chain, or None. Raises `VirtqueueError` on a bad chain."""
        ...

    def pop_batch(self, mem: GuestMemory, max_chains: int) -> list[DescriptorChain]:
        """Up to ``max_chains`` available chains (one avail index read for all)."""
        ...

    def push_used(self, mem: GuestMemory, chain: DescriptorChain, written: int) -> None:
        """Return ``chain`` to the driver, ``written`` bytes written into it."""
        ...

    def push_used_batch(
        self, mem: GuestMemory, items: Sequence[tuple[DescriptorChain, int]]
    ) -> None:
        """`push_used` for many chains, publishing the used index once."""
        ...

    def needs_notify(self, mem: GuestMemory) -> bool:
        """Whether the driver wants a used-buffer notification now (virtio 1.2 2.7.7.2;
        packed: event suppression, 2.8).

        Consumes the decision: call once after publishing used buffers."""
        ...

    def enable_notification(self, mem: GuestMemory) -> bool:
        """Ask the driver for available-buffer notifications again. Returns True if
        buffers became available meanwhile: the caller must poll again (the race of
        virtio 1.2 2.7.14 / 2.7.10)."""
        ...

    def disable_notification(self, mem: GuestMemory) -> None:
        """Tell the driver no available-buffer notifications are needed (polling)."""
        ...

    def reset(self) -> None:
        """Back to the initial state (device reset or RING_RESET); drops cached views."""
        ...


class DriverQueue(Protocol[T]):
    """The driver side of one virtqueue; buffers go in with a token and come back by it."""

    config: QueueConfig

    @property
    def num_free(self) -> int:
        """Free descriptors in the ring."""
        ...

    @property
    def broken(self) -> bool:
        """Latched after a `VirtqueueError` until `detach_unused` + `init_rings`."""
        ...

    def init_rings(self, mem: GuestMemory) -> None:
        """Write the initial (empty) ring state into guest memory, before DRIVER_OK."""
        ...

    def add(
        self,
        mem: GuestMemory,
        readable: Sequence[tuple[int, int]],
        writable: Sequence[tuple[int, int]],
        token: T,
    ) -> None:
        """Expose one buffer (readable segments first). Uses an indirect table when
        INDIRECT_DESC is negotiated, a pool was given and it saves ring slots. Raises
        `QueueFullError` (nothing written) or ValueError (no segments)."""
        ...

    def kick_prepare(self, mem: GuestMemory) -> bool:
        """Publish added buffers (avail idx) and decide whether the device wants a kick
        (EVENT_IDX avail_event or VIRTQ_USED_F_NO_NOTIFY / packed event flags)."""
        ...

    def notification_data(self) -> int:
        """The le32 a kick carries with VIRTIO_F_NOTIFICATION_DATA (virtio 1.2 2.9):
        queue index | next avail position (packed: with its wrap counter) << 16."""
        ...

    def get_used(self, mem: GuestMemory) -> tuple[T, int] | None:
        """The next used buffer's token and written length, or None."""
        ...

    def get_used_batch(self, mem: GuestMemory, max_items: int) -> list[tuple[T, int]]:
        """Up to ``max_items`` used buffers."""
        ...

    def enable_cb(self, mem: GuestMemory) -> bool:
        """Ask for used-buffer notifications again. Returns True if used buffers are
        already pending: the caller must poll again."""
        ...

    def disable_cb(self, mem: GuestMemory) -> None:
        """Ask the device not to send used-buffer notifications (best effort)."""
        ...

    def detach_unused(self) -> list[T]:
        """After a device/queue reset: every outstanding token; back to initial state."""
        ...


# --------------------------------------------------------------------------- factories


def make_device_queue(fmt: RingFormat, cfg: QueueConfig) -> DeviceQueue:
    """The device side of a queue in ``fmt``."""
    if fmt is RingFormat.PACKED:
        from xenvirtio.virtio.packed import PackedDeviceQueue

        return PackedDeviceQueue(cfg)
    from xenvirtio.virtio.split import SplitDeviceQueue

    return SplitDeviceQueue(cfg)


def make_driver_queue(
    fmt: RingFormat, cfg: QueueConfig, indirect: IndirectPool | None = None
) -> DriverQueue[Any]:
    """The driver side of a queue in ``fmt``; ``indirect`` enables indirect tables."""
    if fmt is RingFormat.PACKED:
        from xenvirtio.virtio.packed import PackedDriverQueue

        return PackedDriverQueue(cfg, indirect)
    from xenvirtio.virtio.split import SplitDriverQueue

    return SplitDriverQueue(cfg, indirect)
