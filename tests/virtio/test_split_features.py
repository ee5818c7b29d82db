"""Split ring features, decided purely from ring memory: EVENT_IDX and flag-based
notification suppression both ways, IN_ORDER batching, NOTIFICATION_DATA, queue reset,
save/restore, and a hostile device against the driver side."""

from __future__ import annotations

import pytest

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.testing.virtio_builders import SplitRingBuilder
from xenvirtio.virtio.queue import (
    InvalidUsedError,
    QueueBrokenError,
    QueueConfig,
)
from xenvirtio.virtio.rings import need_event
from xenvirtio.virtio.split import SplitDeviceQueue, SplitDriverQueue

V1 = 1 << S.VIRTIO_F_VERSION_1
EVENT_IDX = 1 << S.VIRTIO_RING_F_EVENT_IDX
IN_ORDER = 1 << S.VIRTIO_F_IN_ORDER
WRITE = S.VIRTQ_DESC_F_WRITE


def pair(
    features: int, size: int = 8
) -> tuple[FlatMemory, SplitRingBuilder, SplitDriverQueue[int], SplitDeviceQueue]:
    mem = FlatMemory(0x10000)
    ring = SplitRingBuilder(mem, size, features=features, index=3)
    drv: SplitDriverQueue[int] = SplitDriverQueue(ring.config)
    drv.init_rings(mem)
    return mem, ring, drv, SplitDeviceQueue(ring.config)


def test_need_event_matches_the_spec_example() -> None:
    # used_event 0: notify after the first buffer, and again 65536 later (2.7.7.2 note).
    assert need_event(0, 1, 0)
    assert not need_event(0, 2, 1)
    assert need_event(0xFFFF, 0, 0xFFFF)  # entry 65535 written as idx wraps to 0
    assert need_event(5, 10, 0) and not need_event(10, 10, 0)


class TestUsedNotification:
    def test_flags_no_interrupt(self) -> None:
        mem, ring, drv, dev = pair(V1)
        drv.add(mem, [], [(0x8000, 4)], 1)
        chain = dev.pop(mem)
        assert chain is not None
        drv.disable_cb(mem)
        assert ring.mem.read(ring.config.driver_addr, 2) == b"\x01\x00"
        dev.push_used(mem, chain, 0)
        assert not dev.needs_notify(mem)
        assert drv.enable_cb(mem)  # a used buffer is pending: poll again
        assert not dev.needs_notify(mem)  # nothing new since the last decision
        drv.add(mem, [], [(0x8000, 4)], 2)
        chain = dev.pop(mem)
        assert chain is not None
        dev.push_used(mem, chain, 0)
        assert dev.needs_notify(mem)

    def test_event_idx(self) -> None:
        mem, ring, drv, dev = pair(V1 | EVENT_IDX)
        for token in range(3):
            drv.add(mem, [(0x8000, 4)], [], token)
        chains = dev.pop_batch(mem, 8)
        ring.set_used_event(1)  # "notify me when used idx passes 1"
        dev.push_used(mem, chains[0], 0)
        assert not dev.needs_notify(mem)  # used idx 0 -> 1: entry 0 written
        dev.push_used(mem, chains[1], 0)
        assert dev.needs_notify(mem)  # entry 1 written: used_event reached
        dev.push_used(mem, chains[2], 0)
        assert not dev.needs_notify(mem)
        assert ring.mem.read(ring.config.driver_addr, 2) == b"\x00\x00"  # flags stay 0

    def test_driver_updates_used_event_as_it_consumes(self) -> None:
        mem, _, drv, dev = pair(V1 | EVENT_IDX)
        drv.add(mem, [(0x8000, 4)], [], 1)
        drv.add(mem, [(0x8000, 4)], [], 2)
        chains = dev.pop_batch(mem, 8)
        dev.push_used(mem, chains[0], 0)
        assert dev.needs_notify(mem)  # used_event 0 (fresh ring)
        assert drv.get_used(mem) == (1, 0)
        dev.push_used(mem, chains[1], 0)
        assert dev.needs_notify(mem)  # the driver moved used_event to 1
        drv.disable_cb(mem)
        drv.add(mem, [(0x8000, 4)], [], 3)
        chain = dev.pop(mem)
        assert chain is not None
        dev.push_used(mem, chain, 0)
        assert not dev.needs_notify(mem)


class TestAvailNotification:
    def test_flags_no_notify(self) -> None:
        mem, ring, drv, dev = pair(V1)
        drv.add(mem, [(0x8000, 4)], [], 1)
        assert drv.kick_prepare(mem)
        assert not drv.kick_prepare(mem)  # nothing added since
        dev.disable_notification(mem)
        assert ring.used_flags() == S.VIRTQ_USED_F_NO_NOTIFY
        drv.add(mem, [(0x8000, 4)], [], 2)
        assert not drv.kick_prepare(mem)
        assert dev.enable_notification(mem)  # buffers arrived meanwhile: re-poll
        assert ring.used_flags() == 0
        assert len(dev.pop_batch(mem, 8)) == 2
        assert not dev.enable_notification(mem)

    def test_event_idx(self) -> None:
        mem, ring, drv, dev = pair(V1 | EVENT_IDX)
        drv.add(mem, [(0x8000, 4)], [], 1)
        assert drv.kick_prepare(mem)  # avail_event 0: kick when idx passes 0
        assert dev.pop(mem) is not None
        assert ring.avail_event() == 1  # popping re-arms at next_avail
        dev.disable_notification(mem)
        drv.add(mem, [(0x8000, 4)], [], 2)
        assert drv.kick_prepare(mem)  # stale avail_event 1 fires once ...
        drv.add(mem, [(0x8000, 4)], [], 3)
        assert not drv.kick_prepare(mem)  # ... then stays quiet
        assert dev.enable_notification(mem)
        assert ring.avail_event() == 1
        assert len(dev.pop_batch(mem, 8)) == 2
        assert not dev.enable_notification(mem)
        assert ring.avail_event() == 3


def test_notification_data() -> None:
    mem, _, drv, _ = pair(V1 | 1 << S.VIRTIO_F_NOTIFICATION_DATA)
    assert drv.notification_data() == 3
    for token in range(5):
        drv.add(mem, [(0x8000, 1)], [], token)
    assert drv.notification_data() == 3 | 5 << 16  # vqn | next_off, next_wrap (bit 31)


class TestInOrder:
    def test_device_writes_one_entry_per_batch(self) -> None:
        mem, ring, drv, dev = pair(V1 | IN_ORDER)
        for token in range(4):
            drv.add(mem, [(0x8000, 4)], [(0x9000 + 16 * token, 16)], token)
        chains = dev.pop_batch(mem, 8)
        assert [c.head for c in chains] == [0, 2, 4, 6]  # descriptors in ring order
        dev.push_used_batch(mem, [(chains[0], 16), (chains[1], 16), (chains[2], 5)])
        assert ring.used_idx() == 3
        assert ring.used_elem(0) == (4, 5)  # batch entry at the batch's first slot
        assert drv.get_used_batch(mem, 8) == [(0, 16), (1, 16), (2, 5)]
        dev.push_used(mem, chains[3], 16)
        assert ring.used_elem(3) == (6, 16)
        assert drv.get_used(mem) == (3, 16)
        assert drv.num_free == 8

    def test_partial_write_ends_a_batch(self) -> None:
        mem, ring, drv, dev = pair(V1 | IN_ORDER)
        for token in range(3):
            drv.add(mem, [], [(0x9000, 16)], token)
        chains = dev.pop_batch(mem, 8)
        dev.push_used_batch(mem, [(chains[0], 3), (chains[1], 16), (chains[2], 16)])
        assert ring.used_elem(0) == (0, 3)
        assert ring.used_elem(1) == (2, 16)
        assert drv.get_used_batch(mem, 8) == [(0, 3), (1, 16), (2, 16)]

    def test_device_must_use_in_order(self) -> None:
        mem, _, drv, dev = pair(V1 | IN_ORDER)
        drv.add(mem, [(0x8000, 4)], [], 0)
        drv.add(mem, [(0x8000, 4)], [], 1)
        chains = dev.pop_batch(mem, 8)
        with pytest.raises(ValueError, match="IN_ORDER"):
            dev.push_used(mem, chains[1], 0)

    def test_driver_chains_wrap_in_ring_order(self) -> None:
        mem, _, drv, dev = pair(V1 | IN_ORDER, size=4)
        for rnd in range(3):
            drv.add(mem, [(0x8000, 1), (0x8001, 1), (0x8002, 1)], [], rnd)
            chain = dev.pop(mem)
            assert chain is not None and chain.head == (3 * rnd) % 4
            dev.push_used(mem, chain, 0)
            assert drv.get_used(mem) == (rnd, 0)


class TestHostileDevice:
    def _one(
        self, features: int = V1
    ) -> tuple[FlatMemory, SplitRingBuilder, SplitDriverQueue[int]]:
        mem, ring, drv, _ = pair(features)
        drv.add(mem, [], [(0x9000, 8)], 42)
        return mem, ring, drv

    def _used(self, ring: SplitRingBuilder, pos: int, used_id: int, length: int, idx: int) -> None:
        ring.mem.write(
            ring.config.device_addr + 4 + 8 * pos, S.VIRTQ_USED_ELEM.pack(used_id, length)
        )
        ring.mem.write(ring.config.device_addr + 2, S.VIRTQ_U16.pack(idx))

    @pytest.mark.parametrize(
        ("used_id", "length", "idx"),
        [
            (5, 0, 1),  # not an outstanding head
            (1 << 20, 0, 1),  # not even a descriptor index
            (0, 9, 1),  # more written than the buffer holds
            (0, 0, 2),  # used idx beyond what is outstanding
        ],
    )
    def test_bad_used_latches_broken(self, used_id: int, length: int, idx: int) -> None:
        mem, ring, drv = self._one()
        self._used(ring, 0, used_id, length, idx)
        with pytest.raises(InvalidUsedError):
            drv.get_used(mem)
        assert drv.broken
        with pytest.raises(QueueBrokenError):
            drv.add(mem, [(0x8000, 1)], [], 1)
        assert drv.detach_unused() == [42]
        assert not drv.broken and drv.num_free == 8

    def test_in_order_id_not_outstanding(self) -> None:
        mem, ring, drv = self._one(V1 | IN_ORDER)
        self._used(ring, 0, 3, 0, 1)
        with pytest.raises(InvalidUsedError):
            drv.get_used(mem)
        assert drv.broken


def test_queue_reset_returns_tokens_and_restarts() -> None:
    mem, ring, drv, dev = pair(V1 | 1 << S.VIRTIO_F_RING_RESET)
    for token in range(3):
        drv.add(mem, [(0x8000, 4)], [], token)
    chain = dev.pop(mem)
    assert chain is not None
    assert sorted(drv.detach_unused()) == [0, 1, 2]
    dev.reset()
    drv.init_rings(mem)
    assert ring.used_idx() == 0 and drv.num_free == 8
    drv.add(mem, [(0x8000, 4)], [], 9)
    chain = dev.pop(mem)
    assert chain is not None and chain.head == 0
    dev.push_used(mem, chain, 0)
    assert drv.get_used(mem) == (9, 0)


def test_save_and_restore_indices() -> None:
    mem, ring, drv, dev = pair(V1)
    for token in range(3):
        drv.add(mem, [(0x8000, 4)], [], token)
    for chain in dev.pop_batch(mem, 2):
        dev.push_used(mem, chain, 0)
    saved = (dev.next_avail, dev.next_used)
    assert saved == (2, 2)
    fresh = SplitDeviceQueue(ring.config)
    fresh.next_avail, fresh.next_used = saved
    chain = fresh.pop(mem)
    assert chain is not None and chain.head == 2
    fresh.push_used(mem, chain, 0)
    assert fresh.needs_notify(mem)  # after a restore the first decision notifies
    assert [t for t, _ in drv.get_used_batch(mem, 8)] == [0, 1, 2]


def test_indices_wrap_past_65535() -> None:
    mem, _, drv, dev = pair(V1 | EVENT_IDX, size=4)
    for token in range(70000):
        drv.add(mem, [(0x8000, 1)], [], token)
        drv.kick_prepare(mem)
        chain = dev.pop(mem)
        assert chain is not None
        dev.push_used(mem, chain, 0)
        dev.needs_notify(mem)
        assert drv.get_used(mem) == (token, 0)
    assert dev.next_avail == 70000 & 0xFFFF


def test_config_for_driver_and_device_agree() -> None:
    cfg = QueueConfig(8, 0, 0x80, 0x100, V1 | EVENT_IDX | IN_ORDER)
    assert cfg.event_idx and cfg.in_order and not cfg.indirect_desc
