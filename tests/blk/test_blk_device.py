"""The device model on a raw split ring the test writes as the driver: statuses, data,
durability (fdatasync before FLUSH completes), engines, batching, hostile chains."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from blk_support import WRITE, RawRig, header, make_image, raw_rig, segment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import ThreadPoolEngine
from xenvirtio.devices.blk.request import MissingStatusError
from xenvirtio.spec import virtio as S
from xenvirtio.spec import virtio_blk as B
from xenvirtio.virtio.queue import VirtqueueError

T = B.VirtioBlkType
OK, IOERR, UNSUPP = (int(s) for s in B.VirtioBlkStatus)
PATTERN = bytes(range(251))  # a prime length: every sector differs


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "disk.img", 1 << 20, PATTERN)


def request(rig: RawRig, rtype: int, sector: int = 0, out: bytes = b"", inlen: int = 0):
    """Submit one request (header [+ out data], [in data,] status); returns the
    addresses of the in-data buffer and the status byte."""
    hdr = rig.ring.alloc(16 + len(out))
    rig.mem.write(hdr, header(rtype, sector) + out)
    data = rig.ring.alloc(max(inlen, 1))
    status = rig.ring.alloc(1)
    rig.mem.write(status, b"\xff")
    descs = [(hdr, 16 + len(out), 0)]
    if inlen:
        descs.append((data, inlen, WRITE))
    descs.append((status, 1, WRITE))
    rig.submit(descs)
    return data, status


def test_read_write_get_id_and_used_lengths(image: Path) -> None:
    rig = raw_rig(image, BlkConfig(queue_size=64, serial="disk-0001"))
    before = image.read_bytes()
    data, status = request(rig, T.VIRTIO_BLK_T_IN, 1, inlen=1024)
    assert rig.status(status) == OK
    assert rig.mem.read(data, 1024) == before[512:1536]
    assert rig.ring.used_elem(0)[1] == 1025  # data and status written
    _, status = request(rig, T.VIRTIO_BLK_T_OUT, 2, out=b"\xab" * 512)
    assert rig.status(status) == OK
    assert image.read_bytes()[1024:1536] == b"\xab" * 512
    data, status = request(rig, T.VIRTIO_BLK_T_GET_ID, inlen=20)
    assert rig.status(status) == OK
    assert rig.mem.read(data, 20) == b"disk-0001" + bytes(11)
    assert rig.ring.used_idx() == 3


def test_bad_requests_get_their_status_and_touch_nothing(image: Path) -> None:
    rig = raw_rig(image, BlkConfig(queue_size=64, read_only=True))
    before = image.read_bytes()
    assert rig.status(request(rig, T.VIRTIO_BLK_T_OUT, 0, out=b"x" * 512)[1]) == IOERR
    assert rig.status(request(rig, T.VIRTIO_BLK_T_IN, 2048, inlen=512)[1]) == IOERR
    assert rig.status(request(rig, 99, inlen=512)[1]) == UNSUPP
    assert image.read_bytes() == before
    assert not rig.device.broken and rig.resets == []


def test_chain_without_status_byte_needs_reset(image: Path) -> None:
    rig = raw_rig(image)
    hdr = rig.ring.alloc(16)
    rig.mem.write(hdr, header(T.VIRTIO_BLK_T_FLUSH))
    with pytest.raises(MissingStatusError):
        rig.submit([(hdr, 16, 0)])
    assert rig.device.broken
    _, status = request(rig, T.VIRTIO_BLK_T_FLUSH)  # a broken device serves nothing
    assert rig.status(status) == 0xFF
    rig.device.reset()
    assert not rig.device.broken and not rig.device.active


def test_hostile_ring_raises_a_virtqueue_error(image: Path) -> None:
    rig = raw_rig(image)
    rig.ring.write_desc(0, 0x2000, 16, S.VIRTQ_DESC_F_NEXT, 0)  # a loop
    rig.ring.push_avail(0)
    with pytest.raises(VirtqueueError):
        rig.device.queue_notify(0)
    assert rig.device.broken


def test_flush_completes_only_after_fdatasync(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = raw_rig(image)
    synced: list[tuple[int, int]] = []
    real = os.fdatasync
    status_addr = [0]

    def spy(fd: int) -> None:
        real(fd)
        synced.append((fd, rig.status(status_addr[0])))  # status not yet written

    monkeypatch.setattr(os, "fdatasync", spy)
    hdr, status_addr[0] = rig.ring.alloc(16), rig.ring.alloc(1)
    rig.mem.write(hdr, header(T.VIRTIO_BLK_T_FLUSH))
    rig.mem.write(status_addr[0], b"\xff")
    rig.submit([(hdr, 16, 0), (status_addr[0], 1, WRITE)])
    assert synced == [(rig.device.backing.fd, 0xFF)]
    assert rig.status(status_addr[0]) == OK


def test_without_flush_negotiated_every_write_is_stable(
    image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fdatasync", calls.append)
    device = VirtioBlkDevice(BlockFile(image), BlkConfig(queue_size=64))
    features = device.avail_features & ~(1 << B.VIRTIO_BLK_F_FLUSH | 1 << S.VIRTIO_F_RING_PACKED)
    rig = raw_rig(image, BlkConfig(queue_size=64), features)
    assert rig.status(request(rig, T.VIRTIO_BLK_T_OUT, 0, out=b"w" * 512)[1]) == OK
    assert rig.status(request(rig, T.VIRTIO_BLK_T_FLUSH)[1]) == UNSUPP
    assert calls == [rig.device.backing.fd]


def test_discard_punches_a_hole_and_write_zeroes_reads_zero(image: Path) -> None:
    rig = raw_rig(image)
    blocks = os.stat(image).st_blocks
    body = segment(0, 512)  # 256 KiB
    assert rig.status(request(rig, T.VIRTIO_BLK_T_DISCARD, out=body)[1]) == OK
    assert os.stat(image).st_blocks < blocks  # ext4/tmpfs support PUNCH_HOLE
    body = segment(1024, 16) + segment(1536, 8, B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
    assert rig.status(request(rig, T.VIRTIO_BLK_T_WRITE_ZEROES, out=body)[1]) == OK
    disk = image.read_bytes()
    assert disk[1024 * 512 : 1040 * 512] == bytes(16 * 512)
    assert disk[1536 * 512 : 1544 * 512] == bytes(8 * 512)
    assert disk[1040 * 512 : 1041 * 512] != bytes(512)


def test_one_interrupt_per_batch(image: Path) -> None:
    rig = raw_rig(image)
    statuses = []
    for i in range(16):  # made available together, one kick
        hdr, st_addr = rig.ring.alloc(16), rig.ring.alloc(1)
        data = rig.ring.alloc(512)
        rig.mem.write(hdr, header(T.VIRTIO_BLK_T_IN, i))
        rig.ring.add_chain([(hdr, 16, 0), (data, 512, WRITE), (st_addr, 1, WRITE)])
        statuses.append(st_addr)
    rig.device.queue_notify(0)
    assert [rig.status(a) for a in statuses] == [OK] * 16
    assert rig.ring.used_idx() == 16
    assert rig.irq.queues == [0]


def test_thread_pool_runs_requests_concurrently(
    image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.preadv

    def slow(fd: int, buffers: list[memoryview], offset: int, *flags: int) -> int:
        time.sleep(0.05)
        return real(fd, buffers, offset, *flags)

    monkeypatch.setattr(os, "preadv", slow)
    engine = ThreadPoolEngine(workers=8, inline=False)  # the slow reads must go to the pool
    woken = threading.Event()
    try:
        rig = raw_rig(image)
        rig.device.engine = engine
        rig.device.wakeup = woken.set
        statuses = []
        for i in range(16):
            hdr, st_addr, data = rig.ring.alloc(16), rig.ring.alloc(1), rig.ring.alloc(512)
            rig.mem.write(hdr, header(T.VIRTIO_BLK_T_IN, i))
            rig.mem.write(st_addr, b"\xff")
            rig.ring.add_chain([(hdr, 16, 0), (data, 512, WRITE), (st_addr, 1, WRITE)])
            statuses.append(st_addr)
        start = time.monotonic()
        rig.device.queue_notify(0)
        deadline = start + 10
        while rig.ring.used_idx() < 16 and time.monotonic() < deadline:
            assert woken.wait(5)
            woken.clear()
            rig.device.poll()  # the edge runs poll on the device's thread
        assert rig.ring.used_idx() == 16
        assert [rig.status(a) for a in statuses] == [OK] * 16
        assert engine.peak >= 4
        assert time.monotonic() - start < 16 * 0.05  # not one after the other
        assert len(rig.irq.queues) < 16  # completions were batched
    finally:
        engine.close()


def test_ring_reset_waits_for_its_requests_and_drops_their_completions(
    image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.preadv
    started = threading.Event()

    def slow(fd: int, buffers: list[memoryview], offset: int, *flags: int) -> int:
        started.set()
        time.sleep(0.05)
        return real(fd, buffers, offset, *flags)

    monkeypatch.setattr(os, "preadv", slow)
    engine = ThreadPoolEngine(workers=2, inline=False)
    try:
        rig = raw_rig(image)
        rig.device.engine = engine
        for i in range(4):
            hdr, st_addr, data = rig.ring.alloc(16), rig.ring.alloc(1), rig.ring.alloc(512)
            rig.mem.write(hdr, header(T.VIRTIO_BLK_T_IN, i))
            rig.ring.add_chain([(hdr, 16, 0), (data, 512, WRITE), (st_addr, 1, WRITE)])
        rig.device.queue_notify(0)
        assert started.wait(5)
        rig.ctx.queues[0] = None  # what the transport does first (virtio 1.2 2.6.1)
        rig.device.queue_reset(0)  # returns once the 4 reads are done with guest memory
        assert engine.peak >= 1
        rig.device.poll()
        assert rig.ring.used_idx() == 0 and rig.irq.queues == []
    finally:
        engine.close()


# ------------------------------------------------------------------------ property
chains = st.lists(
    st.tuples(st.binary(min_size=0, max_size=40), st.integers(0, 600), st.booleans()),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(chains, min_size=1, max_size=4), st.sampled_from([0, 1, 4, 8, 11, 13, 77]))
def test_random_chains_get_a_status_or_a_protocol_error(
    image: Path, batch: list[list[tuple[bytes, int, bool]]], rtype: int
) -> None:
    rig = raw_rig(image, BlkConfig(queue_size=64, serial="s"))
    addrs = []
    for descs in batch:
        chain, last_status = [], 0
        for i, (payload, length, writable) in enumerate(descs):
            raw = (header(rtype, len(payload)) + payload) if i == 0 else payload
            addr = rig.ring.alloc(max(length, len(raw), 1))
            if writable:
                rig.mem.write(addr, b"\xee" * length)
                chain.append((addr, length, WRITE))
                last_status = addr + length - 1 if length else 0
            else:
                rig.mem.write(addr, raw)
                chain.append((addr, len(raw), 0))
        rig.ring.add_chain(sorted(chain, key=lambda d: d[2]))  # readable first
        addrs.append(last_status)
    try:
        rig.device.queue_notify(0)
    except VirtqueueError:
        assert rig.device.broken
        return
    assert rig.ring.used_idx() == len(batch)
    for addr in addrs:
        assert rig.status(addr) in (OK, IOERR, UNSUPP)
