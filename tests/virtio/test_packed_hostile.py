"""A hostile driver against the packed ring device side (and a hostile device against the
driver side): every protocol violation raises its typed error, and a GuardedMemory proves
nothing outside the shared ranges was touched. Each case runs over contiguous
(FlatMemory) and 1-byte-fragmented guest memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from xenvirtio.mem.api import GuestMemory
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.mem.fragmented import FragmentedMemory
from xenvirtio.mem.guard import GuardedMemory
from xenvirtio.spec import virtio as S
from xenvirtio.testing.packed_builders import AVAIL, USED, PackedRingBuilder, avail_bits
from xenvirtio.virtio.packed import PackedDeviceQueue, PackedDriverQueue
from xenvirtio.virtio.queue import (
    ChainLengthOverflowError,
    ChainTooLongError,
    DescriptorAddressError,
    DescriptorOrderError,
    IndirectTableError,
    InvalidHeadError,
    InvalidUsedError,
    NestedIndirectError,
    PackedRingError,
    QueueBrokenError,
    QueueConfig,
    QueueConfigError,
    RingAccessError,
    VirtqueueError,
)

NEXT, WRITE, INDIRECT = S.VIRTQ_DESC_F_NEXT, S.VIRTQ_DESC_F_WRITE, S.VIRTQ_DESC_F_INDIRECT
BASE = 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_F_RING_PACKED
FEATURES = BASE | 1 << S.VIRTIO_RING_F_INDIRECT_DESC
MEM_SIZE = 0x4000
SHARED = 0x2000  # buffer memory the guest shares after the ring (0x1000-0x3000)
UNSHARED = 0x3800  # mapped guest memory the guest did not share with the device
SIZE = 8


@dataclass
class Setup:
    ring: PackedRingBuilder
    guard: GuardedMemory
    data: int
    dev: PackedDeviceQueue

    def pop_raises(self, error: type[VirtqueueError]) -> VirtqueueError:
        with pytest.raises(error) as info:
            self.dev.pop(self.guard)
        assert self.guard.violations == []
        return info.value


MEMORIES: dict[str, Callable[[], GuestMemory]] = {
    "flat": lambda: FlatMemory(MEM_SIZE),
    "fragmented": lambda: FragmentedMemory(MEM_SIZE, fragment=1),
}


def make_setup(mem: GuestMemory, features: int = FEATURES, size: int = SIZE) -> Setup:
    ring = PackedRingBuilder(mem, size, features=features)
    data = ring.alloc(SHARED)
    guard = GuardedMemory(mem, [*ring.ring_ranges(), (data, SHARED + 0x400)])
    return Setup(ring, guard, data, PackedDeviceQueue(ring.config))


@pytest.fixture(params=sorted(MEMORIES))
def setup(request: pytest.FixtureRequest) -> Setup:
    return make_setup(MEMORIES[request.param]())


# -- well-formed input first, so the hostile cases below fail for the reason they name ---


def test_well_formed_list_pops(setup: Setup) -> None:
    first = setup.ring.add_chain([(setup.data, 16, 0), (setup.data + 16, 8, WRITE)], bid=5)
    assert first == 0
    chain = setup.dev.pop(setup.guard)
    assert chain is not None and chain.head == 5 and chain.desc_count == 2
    assert chain.readable == ((setup.data, 16),) and chain.writable == ((setup.data + 16, 8),)
    assert setup.dev.pop(setup.guard) is None
    assert setup.guard.violations == []


def test_descriptor_not_yet_available_is_not_popped(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 16, 0)], bid=1, publish=False)
    assert setup.dev.pop(setup.guard) is None
    setup.ring.publish()
    chain = setup.dev.pop(setup.guard)
    assert chain is not None and chain.head == 1


def test_each_ring_descriptor_byte_is_read_once() -> None:
    # Fragmented memory has no views, so every ring access goes through the guard's log.
    s = make_setup(FragmentedMemory(MEM_SIZE, fragment=1))
    s.ring.add_chain([(s.data, 8, 0), (s.data + 8, 8, 0), (s.data + 16, 8, WRITE)], bid=2)
    assert s.dev.pop(s.guard) is not None
    desc = s.ring.config.desc_addr
    seen: dict[int, int] = {}
    for access in s.guard.accesses:
        if access.op == "read" and desc <= access.gpa < desc + 16 * SIZE:
            for byte in range(access.gpa, access.gpa + access.size):
                seen[byte] = seen.get(byte, 0) + 1
    assert set(seen) == set(range(desc, desc + 16 * 3))
    assert max(seen.values()) == 1


# -- wrap counters and flags out of step ---------------------------------------------------


def test_used_descriptor_ahead_of_the_device(setup: Setup) -> None:
    setup.ring.write_desc(0, setup.data, 16, 0, AVAIL | USED)  # AVAIL == USED == wrap 1
    setup.pop_raises(PackedRingError)


def test_list_element_not_available(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 16, 0), (setup.data + 16, 16, 0)], bid=0, publish=False)
    setup.ring.write_flags(1, avail_bits(0))  # second element left from "another lap"
    setup.ring.publish()
    setup.pop_raises(PackedRingError)


def test_more_than_queue_size_outstanding(setup: Setup) -> None:
    for bid in range(SIZE):
        setup.ring.add_chain([(setup.data + 16 * bid, 16, 0)], bid=bid)
    assert len(setup.dev.pop_batch(setup.guard, SIZE + 1)) == SIZE
    # The driver republishes slot 0 for the next lap although the device has not used it.
    setup.ring.add_chain([(setup.data, 16, 0)], bid=0)
    setup.pop_raises(PackedRingError)


def test_chain_longer_than_queue(setup: Setup) -> None:
    for i in range(SIZE):
        setup.ring.write_desc(i, setup.data + 16 * i, 16, 0, AVAIL | NEXT)
    setup.pop_raises(ChainTooLongError)


# -- buffer ids -----------------------------------------------------------------------------


def test_buffer_id_out_of_range(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 16, 0)], bid=SIZE)
    setup.pop_raises(InvalidHeadError)


def test_buffer_id_already_in_use(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 16, 0)], bid=3)
    setup.ring.add_chain([(setup.data + 16, 16, 0)], bid=3)
    assert setup.dev.pop(setup.guard) is not None
    setup.pop_raises(InvalidHeadError)


def test_buffer_id_is_taken_from_the_last_element(setup: Setup) -> None:
    setup.ring.write_desc(1, setup.data + 16, 16, SIZE + 9, avail_bits(1))  # id out of range
    setup.ring.write_desc(0, setup.data, 16, 2, avail_bits(1) | NEXT)
    setup.pop_raises(InvalidHeadError)


# -- buffers --------------------------------------------------------------------------------


@pytest.mark.parametrize("addr", [UNSHARED, MEM_SIZE, MEM_SIZE - 8])
def test_buffer_outside_shared_memory(setup: Setup, addr: int) -> None:
    setup.ring.add_chain([(addr, 16, 0)], bid=0)
    err = setup.pop_raises(DescriptorAddressError)
    assert isinstance(err, DescriptorAddressError) and err.mem_error is not None


def test_buffer_overflowing_64_bits(setup: Setup) -> None:
    setup.ring.add_chain([((1 << 64) - 8, 16, WRITE)], bid=0)
    err = setup.pop_raises(DescriptorAddressError)
    assert isinstance(err, DescriptorAddressError) and err.mem_error is None


def test_readable_after_writable(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 16, WRITE), (setup.data + 16, 16, 0)], bid=0)
    setup.pop_raises(DescriptorOrderError)


def test_chain_longer_than_4_gib(setup: Setup) -> None:
    half = (1 << 31) + 1
    setup.ring.add_chain([(setup.data, half, 0), (setup.data, half, WRITE)], bid=0)
    setup.pop_raises(ChainLengthOverflowError)


# -- indirect descriptors ---------------------------------------------------------------------


def test_indirect_without_the_feature() -> None:
    s = make_setup(FlatMemory(MEM_SIZE), features=BASE)
    s.ring.add_indirect([(s.data, 16, 0)], bid=0)
    s.pop_raises(IndirectTableError)


@pytest.mark.parametrize("length", [0, 24, 17])
def test_indirect_table_bad_length(setup: Setup, length: int) -> None:
    setup.ring.add_chain([(setup.data, length, INDIRECT)], bid=0)
    setup.pop_raises(IndirectTableError)


def test_indirect_table_larger_than_queue(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 16 * (SIZE + 1), INDIRECT)], bid=0)
    setup.pop_raises(ChainTooLongError)


def test_indirect_table_outside_shared_memory(setup: Setup) -> None:
    setup.ring.add_chain([(UNSHARED, 32, INDIRECT)], bid=0)
    setup.pop_raises(DescriptorAddressError)


def test_nested_indirect(setup: Setup) -> None:
    setup.ring.add_indirect([(setup.data, 16, 0), (setup.data + 64, 32, INDIRECT)], bid=0)
    setup.pop_raises(NestedIndirectError)


def test_indirect_with_next(setup: Setup) -> None:
    setup.ring.add_indirect([(setup.data, 16, 0)], bid=0)
    setup.ring.write_flags(0, avail_bits(1) | INDIRECT | NEXT)
    setup.ring.write_desc(1, setup.data, 16, 0, avail_bits(1))
    setup.pop_raises(IndirectTableError)


def test_indirect_inside_a_list(setup: Setup) -> None:
    table = setup.ring.alloc(16)
    setup.ring.write_table(table, [(setup.data, 16, 0, 0)])
    setup.ring.add_chain([(setup.data, 16, 0), (table, 16, INDIRECT)], bid=0)
    setup.pop_raises(IndirectTableError)


def test_indirect_table_readable_after_writable(setup: Setup) -> None:
    setup.ring.add_indirect([(setup.data, 16, WRITE), (setup.data + 16, 16, 0)], bid=0)
    setup.pop_raises(DescriptorOrderError)


def test_indirect_table_element_outside_shared_memory(setup: Setup) -> None:
    setup.ring.add_indirect([(setup.data, 16, 0), (UNSHARED, 16, WRITE)], bid=0)
    setup.pop_raises(DescriptorAddressError)


def test_indirect_table_flags_other_than_write_are_ignored(setup: Setup) -> None:
    setup.ring.add_indirect([(setup.data, 16, NEXT), (setup.data + 16, 16, WRITE | NEXT)], bid=1)
    chain = setup.dev.pop(setup.guard)
    assert chain is not None and chain.desc_count == 1 and chain.head == 1
    assert chain.readable == ((setup.data, 16),)
    assert chain.writable == ((setup.data + 16, 16),)


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "desc", "driver", "device"),
    [(0, 0, 0x100, 0x104), (32769, 0, 0x100, 0x104), (8, 8, 0x100, 0x104), (8, 0, 0x102, 0x104)],
)
def test_bad_queue_config(size: int, desc: int, driver: int, device: int) -> None:
    cfg = QueueConfig(size, desc, driver, device, FEATURES)
    with pytest.raises(QueueConfigError):
        PackedDeviceQueue(cfg)
    with pytest.raises(QueueConfigError):
        PackedDriverQueue(cfg)


def test_odd_queue_size_is_allowed() -> None:
    s = make_setup(FlatMemory(MEM_SIZE), size=5)
    s.ring.add_chain([(s.data, 16, 0)], bid=4)
    chain = s.dev.pop(s.guard)
    assert chain is not None and chain.head == 4


def test_ring_outside_shared_memory() -> None:
    mem = FlatMemory(MEM_SIZE)
    guard = GuardedMemory(mem, [(0x1000, 0x1000)])
    dev = PackedDeviceQueue(QueueConfig(SIZE, 0, 0x1000, 0x1004, FEATURES))
    with pytest.raises(RingAccessError):
        dev.pop(guard)
    assert guard.violations == []


def test_device_reset_after_an_error(setup: Setup) -> None:
    setup.ring.add_chain([(setup.data, 16, WRITE), (setup.data + 16, 16, 0)], bid=0)
    setup.pop_raises(DescriptorOrderError)
    setup.dev.reset()
    assert setup.dev.next_avail == 1 << 15 and setup.dev.next_used == 1 << 15
    setup.ring.write_desc(0, setup.data, 16, 0, avail_bits(1) | WRITE)
    assert setup.dev.pop(setup.guard) is not None


# -- a hostile device against the driver --------------------------------------------------------


def _driver(mem: GuestMemory) -> tuple[PackedDriverQueue[str], PackedRingBuilder]:
    ring = PackedRingBuilder(mem, SIZE, features=FEATURES)
    drv: PackedDriverQueue[str] = PackedDriverQueue(ring.config)
    drv.init_rings(mem)
    return drv, ring


@pytest.mark.parametrize(
    ("bid", "length"),
    [(SIZE, 0), (1, 0), (0, 17)],
    ids=["id-out-of-range", "id-not-outstanding", "len-too-long"],
)
def test_bad_used_descriptor_breaks_the_driver(bid: int, length: int) -> None:
    mem = FlatMemory(MEM_SIZE)
    drv, ring = _driver(mem)
    drv.add(mem, [(0x2000, 8)], [(0x2100, 16)], "a")
    ring.write_desc(0, 0, length, bid, AVAIL | USED | WRITE)
    with pytest.raises(InvalidUsedError):
        drv.get_used(mem)
    assert drv.broken
    with pytest.raises(QueueBrokenError):
        drv.add(mem, [(0x2000, 8)], [], "b")
    assert drv.detach_unused() == ["a"]
    assert not drv.broken
    drv.init_rings(mem)
    drv.add(mem, [(0x2000, 8)], [], "c")
    assert drv.num_free == SIZE - 1


def test_in_order_used_id_not_outstanding() -> None:
    mem = FlatMemory(MEM_SIZE)
    ring = PackedRingBuilder(mem, SIZE, features=FEATURES | 1 << S.VIRTIO_F_IN_ORDER)
    drv: PackedDriverQueue[int] = PackedDriverQueue(ring.config)
    drv.init_rings(mem)
    drv.add(mem, [(0x2000, 8)], [], 1)
    ring.write_desc(0, 0, 0, 6, AVAIL | USED)
    with pytest.raises(InvalidUsedError):
        drv.get_used_batch(mem, 4)
    assert drv.broken
