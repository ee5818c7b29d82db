"""A hostile driver against the split ring device side: every protocol violation raises
its typed error, and a GuardedMemory proves nothing outside the shared ranges was touched.
Each case runs over contiguous (FlatMemory) and 1-byte-fragmented guest memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from xenvirtio.mem.api import GuestMemory, GuestMemoryError
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.mem.guard import GuardedMemory
from xenvirtio.spec import virtio as S
from xenvirtio.testing.virtio_builders import SplitRingBuilder
from xenvirtio.virtio.queue import (
    ChainLengthOverflowError,
    ChainTooLongError,
    DescriptorAddressError,
    DescriptorLoopError,
    DescriptorOrderError,
    IndirectTableError,
    InvalidAvailIdx,
    InvalidHeadError,
    NestedIndirectError,
    QueueConfig,
    QueueConfigError,
    RingAccessError,
    VirtqueueError,
)
from xenvirtio.virtio.split import SplitDeviceQueue

NEXT, WRITE, INDIRECT = S.VIRTQ_DESC_F_NEXT, S.VIRTQ_DESC_F_WRITE, S.VIRTQ_DESC_F_INDIRECT
V1 = 1 << S.VIRTIO_F_VERSION_1
FEATURES = V1 | 1 << S.VIRTIO_RING_F_INDIRECT_DESC
MEM_SIZE = 0x4000
SHARED = 0x2000  # bytes of buffer memory the guest shares after the ring (0x1000-0x3000)
UNSHARED = 0x3800  # mapped guest memory the guest did not share with the device


@dataclass
class Setup:
    ring: SplitRingBuilder
    guard: GuardedMemory
    data: int  # start of the shared buffer memory
    dev: SplitDeviceQueue

    def pop_raises(self, error: type[VirtqueueError]) -> VirtqueueError:
        with pytest.raises(error) as info:
            self.dev.pop(self.guard)
        assert self.guard.violations == []
        return info.value


MEMORIES: dict[str, Callable[[], GuestMemory]] = {
    "flat": lambda: FlatMemory(MEM_SIZE),
    "fragmented": lambda: FragmentedMemory(MEM_SIZE, fragment=1),
}


@pytest.fixture(params=sorted(MEMORIES))
def setup(request: pytest.FixtureRequest) -> Setup:
    return make_setup(MEMORIES[request.param](), FEATURES)


def make_setup(mem: GuestMemory, features: int, size: int = 8) -> Setup:
    ring = SplitRingBuilder(mem, size, features=features)
    data = ring.alloc(SHARED)
    # Shared: the ring, the buffers, and what the builder allocates after them (tables).
    guard = GuardedMemory(mem, [*ring.ring_ranges(), (data, SHARED + 0x400)])
    return Setup(ring, guard, data, SplitDeviceQueue(ring.config))


def test_well_formed_chain_pops(setup: Setup) -> None:
    head = setup.ring.add_chain([(setup.data, 16, 0), (setup.data + 16, 8, WRITE)])
    chain = setup.dev.pop(setup.guard)
    assert chain is not None and chain.head == head
    assert chain.readable == ((setup.data, 16),) and chain.writable == ((setup.data + 16, 8),)
    assert (chain.readable_len, chain.writable_len, chain.desc_count) == (16, 8, 2)
    assert setup.guard.violations == []


def test_descriptor_loop(setup: Setup) -> None:
    setup.ring.write_desc(0, setup.data, 4, NEXT, 1)
    setup.ring.write_desc(1, setup.data, 4, NEXT, 0)
    setup.ring.push_avail(0)
    setup.pop_raises(DescriptorLoopError)


def test_self_loop(setup: Setup) -> None:
    setup.ring.write_desc(3, setup.data, 4, NEXT, 3)
    setup.ring.push_avail(3)
    setup.pop_raises(DescriptorLoopError)


def test_head_out_of_range(setup: Setup) -> None:
    setup.ring.push_avail(8)
    setup.pop_raises(InvalidHeadError)


def test_next_out_of_range(setup: Setup) -> None:
    setup.ring.write_desc(0, setup.data, 4, NEXT, 0xFFFF)
    setup.ring.push_avail(0)
    setup.pop_raises(InvalidHeadError)


def test_avail_idx_jump(setup: Setup) -> None:
    setup.ring.set_avail_idx(9)  # Queue Size 8: at most 8 outstanding
    setup.pop_raises(InvalidAvailIdx)
    setup.ring.set_avail_idx(0xFFFF)  # "behind": a decrement, also a jump of 65535
    setup.pop_raises(InvalidAvailIdx)


def test_avail_idx_exactly_queue_size_is_fine(setup: Setup) -> None:
    for i in range(8):
        setup.ring.write_desc(i, setup.data + 16 * i, 16, 0)
        setup.ring.push_avail(i)
    assert len(setup.dev.pop_batch(setup.guard, 100)) == 8


def test_readable_after_writable(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 4, WRITE), (setup.data + 4, 4, 0)])
    setup.pop_raises(DescriptorOrderError)


def test_readable_after_writable_in_indirect(setup: Setup) -> None:
    setup.ring.add_indirect([(setup.data, 4, WRITE), (setup.data + 4, 4, 0)])
    setup.pop_raises(DescriptorOrderError)


def test_indirect_inside_indirect(setup: Setup) -> None:
    setup.ring.add_indirect([(setup.data, 4, 0), (setup.data + 64, 32, INDIRECT)])
    setup.pop_raises(NestedIndirectError)


@pytest.mark.parametrize("length", [0, 8, 17, 31])
def test_indirect_table_size(setup: Setup, length: int) -> None:
    setup.ring.write_desc(0, setup.data, length, INDIRECT)
    setup.ring.push_avail(0)
    setup.pop_raises(IndirectTableError)


def test_indirect_with_next(setup: Setup) -> None:
    setup.ring.write_table(setup.data, [(setup.data + 64, 4, 0, 0)])
    setup.ring.write_desc(0, setup.data, 16, INDIRECT | NEXT, 1)
    setup.ring.write_desc(1, setup.data + 64, 4, 0)
    setup.ring.push_avail(0)
    setup.pop_raises(IndirectTableError)


def test_indirect_not_negotiated() -> None:
    s = make_setup(FlatMemory(MEM_SIZE), V1)
    s.ring.add_indirect([(s.data + 256, 4, 0)])
    s.pop_raises(IndirectTableError)


def test_indirect_table_loop(setup: Setup) -> None:
    setup.ring.write_table(
        setup.data, [(setup.data + 64, 4, NEXT, 1), (setup.data + 64, 4, NEXT, 0)]
    )
    setup.ring.write_desc(0, setup.data, 32, INDIRECT)
    setup.ring.push_avail(0)
    setup.pop_raises(DescriptorLoopError)


def test_indirect_next_outside_table(setup: Setup) -> None:
    setup.ring.write_table(setup.data, [(setup.data + 64, 4, NEXT, 2), (setup.data, 4, 0, 0)])
    setup.ring.write_desc(0, setup.data, 32, INDIRECT)
    setup.ring.push_avail(0)
    setup.pop_raises(InvalidHeadError)


def test_indirect_table_larger_than_queue(setup: Setup) -> None:
    setup.ring.write_desc(0, setup.data, 16 * 9, INDIRECT)
    setup.ring.push_avail(0)
    setup.pop_raises(ChainTooLongError)


def test_chain_longer_than_queue_size(setup: Setup) -> None:
    # 7 direct descriptors, then an indirect table of 2: 9 elements > Queue Size 8.
    table = setup.data + 0x200
    setup.ring.write_table(table, [(setup.data, 1, NEXT, 1), (setup.data, 1, 0, 0)])
    for i in range(7):
        setup.ring.write_desc(i, setup.data, 1, NEXT, i + 1)
    setup.ring.write_desc(7, table, 32, INDIRECT)
    setup.ring.push_avail(0)
    setup.pop_raises(ChainTooLongError)


def test_total_length_overflow(setup: Setup) -> None:
    # Lengths are checked before memory: neither huge buffer is ever looked at.
    setup.ring.add_chain([(setup.data, 0x80000000, 0), (setup.data, 0x80000001, 0)])
    setup.pop_raises(ChainLengthOverflowError)


@pytest.mark.parametrize(
    ("addr", "length"),
    [
        (MEM_SIZE - 4, 8),  # runs off the end of guest memory
        (MEM_SIZE + 0x1000, 1),  # unmapped
        ((1 << 64) - 8, 16),  # wraps the 64-bit address space
        (UNSHARED, 16),  # mapped, but not memory the guest shared with us
    ],
)
def test_buffer_out_of_range(setup: Setup, addr: int, length: int) -> None:
    setup.ring.add_chain([(addr, length, WRITE)])
    err = setup.pop_raises(DescriptorAddressError)
    assert isinstance(err, DescriptorAddressError)
    if addr + length <= 1 << 64:
        assert isinstance(err.mem_error, GuestMemoryError)


def test_indirect_table_out_of_range(setup: Setup) -> None:
    setup.ring.write_desc(0, MEM_SIZE - 16, 32, INDIRECT)
    setup.ring.push_avail(0)
    setup.pop_raises(DescriptorAddressError)


def test_writable_buffer_in_read_only_memory() -> None:
    mem = FlatMemory(MEM_SIZE)
    mem.add_region(0x10000, bytearray(0x100), readonly=True)
    s = make_setup(mem, FEATURES)
    s.guard.allow(0x10000, 0x100)
    s.ring.add_chain([(0x10000, 16, WRITE)])
    s.pop_raises(DescriptorAddressError)
    s.ring.add_chain([(0x10000, 16, 0)])  # reading it is fine
    s.dev.reset()
    s.dev.next_avail = 1
    chain = s.dev.pop(s.guard)
    assert chain is not None and chain.readable == ((0x10000, 16),)


def test_ring_outside_memory() -> None:
    cfg = QueueConfig(8, MEM_SIZE, 0x800, 0x900, FEATURES)
    with pytest.raises(RingAccessError):
        SplitDeviceQueue(cfg).pop(FlatMemory(MEM_SIZE))


def test_used_ring_read_only() -> None:
    mem = FlatMemory(0x1000)
    mem.add_region(0x1000, bytearray(0x100), readonly=True)
    cfg = QueueConfig(8, 0, 0x800, 0x1000, FEATURES)
    with pytest.raises(RingAccessError):
        SplitDeviceQueue(cfg).pop(mem)


@pytest.mark.parametrize(
    "cfg",
    [
        QueueConfig(6, 0, 0x800, 0x900),  # not a power of 2
        QueueConfig(0, 0, 0x800, 0x900),
        QueueConfig(65536, 0, 0x800, 0x900),
        QueueConfig(8, 8, 0x800, 0x900),  # descriptor table not 16-aligned
        QueueConfig(8, 0, 0x801, 0x900),  # avail not 2-aligned
        QueueConfig(8, 0, 0x800, 0x902),  # used not 4-aligned
        QueueConfig(8, 0, 0x800, (1 << 64) - 8),  # used ring wraps
    ],
)
def test_bad_config(cfg: QueueConfig) -> None:
    with pytest.raises(QueueConfigError):
        SplitDeviceQueue(cfg)


def test_every_error_is_a_virtqueue_error() -> None:
    for err in (DescriptorLoopError, InvalidAvailIdx, NestedIndirectError, QueueConfigError):
        assert issubclass(err, VirtqueueError)


def test_descriptor_read_once(setup: Setup) -> None:
    """The chain is a copy: rewriting the descriptor after pop changes nothing."""
    setup.ring.add_chain([(setup.data, 16, 0)])
    chain = setup.dev.pop(setup.guard)
    setup.ring.write_desc(0, 0, 0xFFFF, WRITE)
    assert chain is not None and chain.readable == ((setup.data, 16),)
    reads = [a for a in setup.guard.accesses if a.op == "read" and a.gpa < setup.data]
    desc_reads = [a for a in reads if a.gpa < setup.ring.config.driver_addr]
    assert len(desc_reads) <= 1  # slow path: one 16-byte read; fast path: a cached view
