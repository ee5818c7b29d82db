"""Driver-side builders for tests: lay out a split ring in guest memory and write raw
descriptors, avail entries and event fields directly, hostile ones included (compare
rust-vmm's ``MockSplitQueue``).

    mem = FlatMemory(1 << 20)
    ring = SplitRingBuilder(mem, size=8, features=...)
    buf = ring.alloc(64)
    head = ring.add_chain([(buf, 64, 0)])        # writes descriptors + avail entry + idx
    dev = SplitDeviceQueue(ring.config)
"""

from __future__ import annotations

from collections.abc import Sequence

from xenvirtio.mem.api import GuestMemory
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.layout import ring_addrs
from xenvirtio.virtio.queue import QueueConfig

DescSpec = tuple[int, int, int]  # (addr, len, flags); NEXT/next are filled in by add_chain

DEFAULT_FEATURES = 1 << S.VIRTIO_F_VERSION_1


class SplitRingBuilder:
    """A split ring at ``base`` in ``mem`` plus a bump allocator for buffers after it."""

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
        addrs = ring_addrs(False, base, size)
        self.config = QueueConfig(size, addrs.desc, addrs.driver, addrs.device, features, index)
        self._next = (addrs.end + 4095) & ~4095
        self.next_desc = 0
        self.avail_idx = 0
        mem.write(addrs.desc, bytes(addrs.end - addrs.desc))

    # -- memory -------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 16) -> int:
        """Guest address of ``size`` fresh bytes after the ring."""
        gpa = (self._next + align - 1) & ~(align - 1)
        self._next = gpa + size
        return gpa

    @property
    def end(self) -> int:
        """First guest address not yet allocated."""
        return self._next

    # -- raw writes -----------------------------------------------------------------------
    def write_desc(self, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
        """Write descriptor ``index`` exactly as given (no checks: may be hostile)."""
        self.mem.write(
            self.config.desc_addr + 16 * index, S.VIRTQ_DESC.pack(addr, length, flags, nxt)
        )

    def write_table(self, gpa: int, descs: Sequence[tuple[int, int, int, int]]) -> None:
        """Write an indirect table of raw ``(addr, len, flags, next)`` descriptors."""
        self.mem.write(gpa, b"".join(S.VIRTQ_DESC.pack(*d) for d in descs))

    def push_avail(self, head: int, publish: bool = True) -> None:
        """Put ``head`` in the next avail slot; publish the new idx unless told not to."""
        pos = self.config.driver_addr + 4 + 2 * (self.avail_idx % self.size)
        self.mem.write(pos, S.VIRTQ_U16.pack(head & 0xFFFF))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        if publish:
            self.set_avail_idx(self.avail_idx)

    def set_avail_idx(self, idx: int) -> None:
        self.mem.write(self.config.driver_addr + 2, S.VIRTQ_U16.pack(idx & 0xFFFF))

    def set_avail_flags(self, flags: int) -> None:
        self.mem.write(self.config.driver_addr, S.VIRTQ_U16.pack(flags))

    def set_used_event(self, value: int) -> None:
        self.mem.write(self.config.driver_addr + 4 + 2 * self.size, S.VIRTQ_U16.pack(value))

    # -- chains ---------------------------------------------------------------------------
    def add_chain(self, descs: Sequence[DescSpec], indices: Sequence[int] | None = None) -> int:
        """Write a well-formed chain (NEXT/next filled in) at ``indices`` (default: the
        next free ones in ring order) and make it available. Returns the head."""
        if indices is None:
            indices = [(self.next_desc + i) % self.size for i in range(len(descs))]
            self.next_desc = (self.next_desc + len(descs)) % self.size
        for i, (addr, length, flags) in enumerate(descs):
            last = i == len(descs) - 1
            nxt = 0 if last else indices[i + 1]
            self.write_desc(
                indices[i], addr, length, flags | (0 if last else S.VIRTQ_DESC_F_NEXT), nxt
            )
        self.push_avail(indices[0])
        return indices[0]

    def add_indirect(self, descs: Sequence[DescSpec], index: int | None = None) -> int:
        """Write ``descs`` as an indirect table and one INDIRECT descriptor pointing at
        it; make it available. Returns the head."""
        table = self.alloc(16 * len(descs))
        raw = [
            (
                a,
                n,
                f | (S.VIRTQ_DESC_F_NEXT if i < len(descs) - 1 else 0),
                i + 1 if i < len(descs) - 1 else 0,
            )
            for i, (a, n, f) in enumerate(descs)
        ]
        self.write_table(table, raw)
        if index is None:
            index, self.next_desc = self.next_desc, (self.next_desc + 1) % self.size
        self.write_desc(index, table, 16 * len(descs), S.VIRTQ_DESC_F_INDIRECT)
        self.push_avail(index)
        return index

    # -- reading what the device did -----------------------------------------------------------
    def used_idx(self) -> int:
        return int(S.VIRTQ_U16.unpack(self.mem.read(self.config.device_addr + 2, 2))[0])

    def used_flags(self) -> int:
        return int(S.VIRTQ_U16.unpack(self.mem.read(self.config.device_addr, 2))[0])

    def used_elem(self, pos: int) -> tuple[int, int]:
        raw = self.mem.read(self.config.device_addr + 4 + 8 * (pos % self.size), 8)
        used_id, length = S.VIRTQ_USED_ELEM.unpack(raw)
        return int(used_id), int(length)

    def avail_event(self) -> int:
        raw = self.mem.read(self.config.device_addr + 4 + 8 * self.size, 2)
        return int(S.VIRTQ_U16.unpack(raw)[0])

    def ring_ranges(self) -> list[tuple[int, int]]:
        """The ``(gpa, size)`` of the three ring areas (for a GuardedMemory)."""
        size = self.size
        cfg = self.config
        return [
            (cfg.desc_addr, 16 * size),
            (cfg.driver_addr, 6 + 2 * size),
            (cfg.device_addr, 6 + 8 * size),
        ]
