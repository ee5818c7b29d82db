"""A driver-side builder for packed rings in tests: lay a packed ring out in guest memory
and write raw descriptors and event suppression fields directly, hostile ones included.

    mem = FlatMemory(1 << 20)
    ring = PackedRingBuilder(mem, size=8, features=...)
    buf = ring.alloc(64)
    bid = ring.add_chain([(buf, 64, 0)])    # descriptors, AVAIL/USED set for this lap
    dev = PackedDeviceQueue(ring.config)
"""

from __future__ import annotations

from collections.abc import Sequence

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.layout import ring_addrs
from xenvirtio.virtio.queue import QueueConfig

DescSpec = tuple[int, int, int]  # (addr, len, flags); NEXT and AVAIL/USED are filled in

DEFAULT_FEATURES = 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_F_RING_PACKED
AVAIL = S.VIRTQ_PACKED_DESC_F_AVAIL
USED = S.VIRTQ_PACKED_DESC_F_USED


def avail_bits(wrap: int) -> int:
    """AVAIL equal to the driver wrap counter and USED its inverse (virtio 1.2 2.8.1)."""
    return AVAIL if wrap else USED


class PackedRingBuilder:
    """A packed ring at ``base`` in ``mem`` plus a bump allocator for buffers after it.

    Tracks the driver's ``next_off``/``wrap`` as a well-behaved driver would; the raw
    writers take explicit positions and flags so tests can also misbehave."""

    def __init__(
        self,
        mem: GuestMemory,
        size: int,
        *,
        base: int = 0,
        features: int = DEFAULT_FEATURES,
        index: int = 0,
    ) -> None:
        self.mem = mem
        self.size = size
        addrs = ring_addrs(True, base, size)
        self.config = QueueConfig(size, addrs.desc, addrs.driver, addrs.device, features, index)
        self._next = (addrs.end + 4095) & ~4095
        self.next_off = 0
        self.wrap = 1
        self.pending = (0, 0)  # (offset, flags) of the last list's first descriptor
        mem.write(addrs.desc, bytes(addrs.end - addrs.desc))

    # -- memory -------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 16) -> int:
        """Guest address of ``size`` fresh bytes after the ring."""
        gpa = (self._next + align - 1) & ~(align - 1)
        self._next = gpa + size
        return gpa

    @property
    def end(self) -> int:
        return self._next

    def ring_ranges(self) -> list[tuple[int, int]]:
        """The ``(gpa, size)`` of the three ring areas (for a GuardedMemory)."""
        cfg = self.config
        return [(cfg.desc_addr, 16 * self.size), (cfg.driver_addr, 4), (cfg.device_addr, 4)]

    # -- raw access -------------------------------------------------------------------------
    def write_desc(self, index: int, addr: int, length: int, bid: int, flags: int) -> None:
        """Write descriptor ``index`` exactly as given (no checks: may be hostile)."""
        raw = S.PVIRTQ_DESC.pack(addr, length, bid, flags)
        self.mem.write(self.config.desc_addr + 16 * index, raw)

    def write_flags(self, index: int, flags: int) -> None:
        self.mem.write(self.config.desc_addr + 16 * index + 14, S.VIRTQ_U16.pack(flags))

    def read_desc(self, index: int) -> tuple[int, int, int, int]:
        """(addr, len, id, flags) of descriptor ``index``."""
        raw = self.mem.read(self.config.desc_addr + 16 * index, 16)
        addr, length, bid, flags = S.PVIRTQ_DESC.unpack(raw)
        return int(addr), int(length), int(bid), int(flags)

    def write_table(self, gpa: int, descs: Sequence[tuple[int, int, int, int]]) -> None:
        """Write an indirect table of raw ``(addr, len, id, flags)`` descriptors."""
        self.mem.write(gpa, b"".join(S.PVIRTQ_DESC.pack(*d) for d in descs))

    def set_driver_event(self, off_wrap: int, flags: int) -> None:
        """The driver event suppression structure (read by the device)."""
        self.mem.write(self.config.driver_addr, S.PVIRTQ_EVENT_SUPPRESS.pack(off_wrap, flags))

    def device_event(self) -> tuple[int, int]:
        """(off_wrap, flags) of the device event suppression structure."""
        raw = self.mem.read(self.config.device_addr, 4)
        off_wrap, flags = S.PVIRTQ_EVENT_SUPPRESS.unpack(raw)
        return int(off_wrap), int(flags)

    # -- well-formed buffers ------------------------------------------------------------------
    def add_chain(self, descs: Sequence[DescSpec], bid: int, publish: bool = True) -> int:
        """Write a list at the driver's next position (NEXT and AVAIL/USED filled in) and
        advance. The first descriptor is written as not yet available and gets its flags
        last, unless ``publish`` is false (then `publish` it later). Returns its offset."""
        first, first_flags = self.next_off, 0
        for i, (addr, length, flags) in enumerate(descs):
            flags |= avail_bits(self.wrap) | (S.VIRTQ_DESC_F_NEXT if i < len(descs) - 1 else 0)
            if i == 0:
                first_flags = flags
                flags = avail_bits(self.wrap ^ 1)  # as left by the previous lap
            self.write_desc(self.next_off, addr, length, bid, flags)
            self.skip(1)
        self.pending = (first, first_flags)
        if publish:
            self.publish()
        return first

    def publish(self) -> None:
        """Write the flags that make the last list added available."""
        self.write_flags(*self.pending)

    def add_indirect(self, descs: Sequence[DescSpec], bid: int) -> int:
        """Write ``descs`` as an indirect table and one INDIRECT descriptor pointing at it."""
        table = self.alloc(16 * len(descs))
        self.write_table(table, [(a, n, 0, f) for a, n, f in descs])
        return self.add_chain([(table, 16 * len(descs), S.VIRTQ_DESC_F_INDIRECT)], bid)

    def skip(self, count: int) -> None:
        """Advance the driver position by ``count`` descriptors without writing."""
        for _ in range(count):
            self.next_off += 1
            if self.next_off == self.size:
                self.next_off, self.wrap = 0, self.wrap ^ 1
