"""What both sides of a packed virtqueue share (virtio 1.2 2.8): wire structs, flag bits,
ring positions with their wrap counters, the configuration check and the event
suppression decision.

A ring position is ``offset | wrap << 15`` (the encoding of ``off_wrap`` in
``struct pvirtq_event_suppress`` and of ``next_off``/``next_wrap`` in notification data,
virtio 1.2 2.8.14 / 2.9). Both wrap counters start at 1 (2.8.1).
"""

from __future__ import annotations

import struct
from typing import Final

from xenvirtio.mem.api import GPA_LIMIT
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.queue import QueueConfig, QueueConfigError

# struct pvirtq_desc (2.8.13) in the pieces each side reads or writes separately: flags
# publish a descriptor, so they are stored last and loaded first.
DESC_ST: Final = S.PVIRTQ_DESC  # addr, len, id, flags
BODY_ST: Final = struct.Struct("<QIH")  # addr, len, id
USED_ST: Final = struct.Struct("<IH")  # len, id (at offset 8)
U16_ST: Final = S.VIRTQ_U16
EVENT_ST: Final = S.PVIRTQ_EVENT_SUPPRESS  # off_wrap, flags
FLAGS_OFF: Final = 14
LEN_OFF: Final = 8

F_NEXT: Final = S.VIRTQ_DESC_F_NEXT
F_WRITE: Final = S.VIRTQ_DESC_F_WRITE
F_INDIRECT: Final = S.VIRTQ_DESC_F_INDIRECT
F_AVAIL: Final = S.VIRTQ_PACKED_DESC_F_AVAIL
F_USED: Final = S.VIRTQ_PACKED_DESC_F_USED
AVAIL_SHIFT: Final = S.VIRTQ_DESC_F_AVAIL
USED_SHIFT: Final = S.VIRTQ_DESC_F_USED
WRAP: Final = 1 << 15  # wrap counter bit of a ring position
OFF_MASK: Final = WRAP - 1
EVENT_FLAGS_MASK: Final = 0x3
MAX_CHAIN_BYTES: Final = 1 << 32  # the sum of a buffer's lengths fits a le32 (2.7.5.2)
START: Final = WRAP  # offset 0, wrap counter 1 (2.8.1)


def check_packed_config(cfg: QueueConfig) -> None:
    """Queue Size 1..32768, any value (2.8); areas aligned 16/4/4 (2.8.10.1)."""
    size = cfg.size
    if not 1 <= size <= S.VIRTQ_MAX_SIZE:
        raise QueueConfigError(f"packed Queue Size {size} outside 1..32768")
    areas = (
        ("descriptor ring", cfg.desc_addr, S.VIRTQ_PACKED_DESC_ALIGN, 16 * size),
        ("driver event suppression", cfg.driver_addr, S.VIRTQ_PACKED_EVENT_ALIGN, 4),
        ("device event suppression", cfg.device_addr, S.VIRTQ_PACKED_EVENT_ALIGN, 4),
    )
    for name, addr, align, length in areas:
        if addr < 0 or addr % align or addr + length > GPA_LIMIT:
            raise QueueConfigError(f"{name} at {addr:#x} is misaligned or out of range")


def ring_sizes(size: int) -> tuple[int, int, int]:
    return (16 * size, S.PVIRTQ_EVENT_SUPPRESS_SIZE, S.PVIRTQ_EVENT_SUPPRESS_SIZE)


def advance(pos: int, count: int, size: int) -> int:
    """The position ``count`` descriptors after ``pos`` (``count <= size``), toggling the
    wrap counter each time the offset passes the end of the ring (2.8.1)."""
    off = (pos & OFF_MASK) + count
    if off >= size:
        return (off - size) | ((pos ^ WRAP) & WRAP)
    return off | (pos & WRAP)


def linear(pos: int, size: int) -> int:
    """``pos`` as a count of descriptors modulo ``2 * size``: offset 0 with wrap counter 1
    is 0, offset 0 with wrap counter 0 is ``size``."""
    return (pos & OFF_MASK) + (0 if pos & WRAP else size)


def event_wanted(
    off_wrap: int, flags: int, event_idx: bool, new: int, moved: int, size: int
) -> bool:
    """The event suppression decision (2.8.10, 2.8.14): should the side that just moved
    its position ``moved`` descriptors, up to ``new``, notify the other side whose
    suppression structure reads ``off_wrap``/``flags``?

    RING_EVENT_FLAGS_DESC (only meaningful with EVENT_IDX) asks for an event once the
    descriptor at ``off_wrap`` was made available/used, i.e. lies among the ``moved``
    descriptors before ``new``. The reserved value 3, and DESC without EVENT_IDX, are
    treated as ENABLE: a spurious notification is harmless, a lost one is not.
    """
    if not moved:
        return False
    flags &= EVENT_FLAGS_MASK
    if flags == S.RING_EVENT_FLAGS_DISABLE:
        return False
    if flags != S.RING_EVENT_FLAGS_DESC or not event_idx:
        return True
    span = 2 * size
    if moved >= span:
        return True
    old = linear(new, size) - moved
    return (linear(off_wrap, size) - old) % span < moved
