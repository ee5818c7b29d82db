"""virtio-blk over XenBus: the device model in dom0 on an image file (three queues), the
unchanged virtio-blk driver in a domain process; then the backend crashes with writes in
flight."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from xbt_support import BackendProcess, GuestDomain, plug, unplug

from xenvirtio.devices.blk.backing import BlockFile
from xenvirtio.devices.blk.config import BlkConfig
from xenvirtio.devices.blk.device import VirtioBlkDevice
from xenvirtio.devices.blk.engine import ThreadPoolEngine
from xenvirtio.hv.api import Hypervisor
from xenvirtio.spec import virtio as S
from xenvirtio.transport.xenbus import BackendRunner

SIZE = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    return path


@pytest.fixture
def guest(dom0: Hypervisor, run_dir: Path) -> Iterator[GuestDomain]:
    domain = GuestDomain(dom0, run_dir, "blk", memory_mb=32)
    try:
        yield domain
    finally:
        domain.destroy()


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_blk_through_xenbus(
    dom0: Hypervisor,
    runner: BackendRunner,
    guest: GuestDomain,
    image: Path,
    packed: bool,
) -> None:
    _, be = plug(dom0, guest.domid)
    engine = ThreadPoolEngine(4)
    backing = BlockFile(image)
    try:
        device = VirtioBlkDevice(backing, BlkConfig(num_queues=3), engine=engine)
        runner.add(str(be), device)
        assert guest.call("blk_attach", devid=0, packed=packed) == SIZE
        features = guest.call("blk_features")
        assert features >> S.VIRTIO_F_ACCESS_PLATFORM & 1  # grant DMA
        assert bool(features >> S.VIRTIO_F_RING_PACKED & 1) == packed
        writes = {off: os.urandom(n) for off, n in ((0, 4096), (8192, 512), (65536, 32768))}
        for off, data in writes.items():
            guest.call("blk_write", offset=off, data=data.hex())
        disk = image.read_bytes()  # flushed: the file holds it
        for off, data in writes.items():
            assert disk[off : off + len(data)] == data
            assert bytes.fromhex(guest.call("blk_read", offset=off, length=len(data))) == data
        link = runner.backends[str(be)].link
        assert link is not None and len(link.queue_of_port) == 3  # one event channel each
        untouched = bytes.fromhex(guest.call("blk_read", offset=4 * 4096, length=512))
        assert untouched == bytes(range(256)) * 2
        guest.call("close")
    finally:
        runner.remove(str(be))
        unplug(dom0, be)
        engine.close()
        backing.close()


def test_blk_backend_crash_replays_in_flight_writes(
    dom0: Hypervisor, run_dir: Path, guest: GuestDomain, image: Path
) -> None:
    _, be = plug(dom0, guest.domid)
    backend = BackendProcess(run_dir, be, device=f"blk:{image}")
    try:
        assert guest.call("blk_attach", devid=0) == SIZE
        guest.call("blk_write", offset=0, data=(b"a" * 4096).hex())
        backend.kill()
        in_flight = {i * 4096: os.urandom(4096) for i in range(1, 9)}
        guest.call("blk_submit", writes=[[off, d.hex()] for off, d in in_flight.items()])
        backend = BackendProcess(run_dir, be, device=f"blk:{image}")
        assert guest.call("blk_collect", timeout=30.0) >= 1  # the driver reconnected
        disk = image.read_bytes()
        assert disk[:4096] == b"a" * 4096
        for off, data in in_flight.items():
            assert disk[off : off + 4096] == data
        guest.call("close")
    finally:
        backend.stop()
        unplug(dom0, be)
