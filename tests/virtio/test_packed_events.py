"""Packed ring event suppression (virtio 1.2 2.8.10, 2.8.14): the driver and device
decisions to notify, with and without VIRTIO_F_RING_EVENT_IDX, across the wrap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.testing.packed_builders import PackedRingBuilder
from xenvirtio.virtio.packed import PackedDeviceQueue, PackedDriverQueue
from xenvirtio.virtio.packed_ring import advance, event_wanted

BASE = 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_F_RING_PACKED
EVENT_IDX = 1 << S.VIRTIO_RING_F_EVENT_IDX
DESC = S.RING_EVENT_FLAGS_DESC
DISABLE = S.RING_EVENT_FLAGS_DISABLE
ENABLE = S.RING_EVENT_FLAGS_ENABLE
DATA = 0x2000


class Pair:
    def __init__(self, size: int, features: int) -> None:
        self.mem = FlatMemory(0x4000)
        self.ring = PackedRingBuilder(self.mem, size, features=BASE | features)
        self.drv: PackedDriverQueue[int] = PackedDriverQueue(self.ring.config)
        self.drv.init_rings(self.mem)
        self.dev = PackedDeviceQueue(self.ring.config)
        self.token = 0

    def add(self, n: int = 1) -> None:
        for _ in range(n):
            self.drv.add(self.mem, [(DATA, 8)], [], self.token)
            self.token += 1

    def complete(self, n: int) -> None:
        chains = self.dev.pop_batch(self.mem, n)
        assert len(chains) == n
        self.dev.push_used_batch(self.mem, [(c, 0) for c in chains])

    def drain(self) -> int:
        return len(self.drv.get_used_batch(self.mem, 1 << 15))


@pytest.mark.parametrize("features", [0, EVENT_IDX])
def test_used_notifications_follow_enable_and_disable_cb(features: int) -> None:
    p = Pair(8, features)
    p.add(4)
    assert not p.dev.needs_notify(p.mem)  # nothing used yet
    p.complete(1)
    assert p.dev.needs_notify(p.mem)
    assert not p.dev.needs_notify(p.mem)  # the decision was consumed
    p.drv.disable_cb(p.mem)
    p.complete(1)
    assert not p.dev.needs_notify(p.mem)
    assert p.drv.enable_cb(p.mem)  # used buffers are pending: poll again
    assert p.drain() == 2
    assert not p.drv.enable_cb(p.mem)
    p.complete(1)
    assert p.dev.needs_notify(p.mem)


def test_event_idx_notifies_once_the_named_descriptor_is_used() -> None:
    p = Pair(8, EVENT_IDX)
    p.add(6)
    assert not p.drv.enable_cb(p.mem)
    assert p.ring.read_desc(0)[3] & 0x8080 == 0x0080  # still the driver's descriptor
    raw = p.mem.read(p.ring.config.driver_addr, 4)
    assert raw == (1 << 15).to_bytes(2, "little") + DESC.to_bytes(2, "little")
    p.complete(2)
    assert p.dev.needs_notify(p.mem)
    p.complete(1)
    assert not p.dev.needs_notify(p.mem)  # the driver has not asked again
    p.ring.set_driver_event(5 | 1 << 15, DESC)  # ask for descriptor 5
    p.complete(1)
    assert not p.dev.needs_notify(p.mem)
    p.complete(2)
    assert p.dev.needs_notify(p.mem)


def test_event_idx_across_the_wrap() -> None:
    p = Pair(4, EVENT_IDX)
    p.add(3)
    p.complete(3)
    assert p.drain() == 3
    p.add(3)  # slots 3, 0, 1: the last two in the next lap (wrap counter 0)
    p.ring.set_driver_event(1, DESC)  # offset 1, wrap counter 0
    p.dev.needs_notify(p.mem)
    p.complete(2)
    assert not p.dev.needs_notify(p.mem)
    p.complete(1)
    assert p.dev.needs_notify(p.mem)
    p.ring.set_driver_event(1 | 1 << 15, DESC)  # the previous lap's offset 1: long gone
    p.add(1)
    p.complete(1)
    assert not p.dev.needs_notify(p.mem)


@pytest.mark.parametrize("features", [0, EVENT_IDX])
def test_kicks_follow_enable_and_disable_notification(features: int) -> None:
    p = Pair(8, features)
    assert not p.drv.kick_prepare(p.mem)  # nothing added
    p.add()
    assert p.drv.kick_prepare(p.mem)
    p.dev.disable_notification(p.mem)
    p.add()
    assert not p.drv.kick_prepare(p.mem)
    assert p.dev.enable_notification(p.mem)  # buffers are available: poll again
    p.complete(2)
    assert not p.dev.enable_notification(p.mem)
    p.add()
    assert p.drv.kick_prepare(p.mem)


def test_event_idx_kick_only_when_the_named_descriptor_is_made_available() -> None:
    p = Pair(8, EVENT_IDX)
    assert not p.dev.enable_notification(p.mem)
    assert p.ring.device_event() == (1 << 15, DESC)
    p.add(2)
    assert p.drv.kick_prepare(p.mem)
    p.add(1)
    assert not p.drv.kick_prepare(p.mem)  # the device did not ask again
    p.complete(3)
    assert not p.dev.enable_notification(p.mem)
    assert p.ring.device_event() == (3 | 1 << 15, DESC)
    p.add(1)
    assert p.drv.kick_prepare(p.mem)


@pytest.mark.parametrize("flags", [DESC, 3])
def test_desc_without_event_idx_and_reserved_flags_still_notify(flags: int) -> None:
    p = Pair(8, 0)
    p.add(1)
    p.ring.set_driver_event(7, flags)
    p.complete(1)
    assert p.dev.needs_notify(p.mem)
    p.mem.write(p.ring.config.device_addr, (7 | flags << 16).to_bytes(4, "little"))
    p.add(1)
    assert p.drv.kick_prepare(p.mem)


@given(
    size=st.integers(1, 40),
    start=st.integers(0, 79),
    moved=st.integers(1, 100),
    event=st.integers(0, 79),
)
def test_event_wanted_matches_walking_the_ring(
    size: int, start: int, moved: int, event: int
) -> None:
    """The modular decision equals walking descriptor by descriptor from the old position
    and asking whether the event's (offset, wrap counter) was passed."""
    start %= 2 * size
    event %= 2 * size

    def as_pos(lin: int) -> int:  # linear count modulo 2*size -> offset | wrap << 15
        return (lin % size) | (0 if lin >= size else 1 << 15)

    old = as_pos(start)
    walked, pos = set(), old
    for _ in range(moved):
        walked.add(pos)
        pos = advance(pos, 1, size)
    want = as_pos(event) in walked
    assert event_wanted(as_pos(event), DESC, True, pos, moved, size) == want
    assert event_wanted(as_pos(event), ENABLE, True, pos, moved, size)
    assert not event_wanted(as_pos(event), DISABLE, True, pos, moved, size)
