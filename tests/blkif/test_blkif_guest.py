"""blkfront inside a guest domain process, its disk exported over NBD: fio verifies
through it; then blkback, a process of its own, is SIGKILLed while fio runs and a new
instance takes over (the frontend reconnects and resubmits what was in flight)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xenvirtio.bench.fio import FioJob, FioResult, run_fio
from xenvirtio.devices.blkif.backend import BlkbackConfig, BlkifBackendRunner
from xenvirtio.drivers.blkif.frontend import BlkfrontConfig
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu import open_emu
from xenvirtio.hv.xenbus.client import read_state
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.blkif_backend_proc import BlkbackProcess
from xenvirtio.testing.blkif_guest import BlkifGuest
from xenvirtio.testing.hv_harness import wait_until
from xenvirtio.testing.tools import require_tool

pytestmark = pytest.mark.interop

VERIFY = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=16, runtime_s=None,
                size="16M", verify="crc32c")  # fmt: skip


@pytest.fixture
def dom0(blkif_run_dir: Path) -> Iterator[Hypervisor]:
    hv = open_emu(blkif_run_dir)
    try:
        yield hv
    finally:
        hv.close()


@pytest.fixture
def backends() -> Iterator[list[BlkbackProcess]]:
    procs: list[BlkbackProcess] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def export_bytes(uri: str, out: Path) -> bytes:
    """What the guest's export holds, read by nbdcopy (a real NBD client)."""
    nbdcopy = require_tool("nbdcopy")
    subprocess.run([nbdcopy, uri, str(out)], check=True, timeout=60, capture_output=True)
    return out.read_bytes()


def test_fio_verifies_through_a_guest_domain(
    dom0: Hypervisor, blkif_run_dir: Path, image: Path, tmp_path: Path
) -> None:
    fio = require_tool("fio")
    runner = BlkifBackendRunner(dom0)
    runner.start_thread(0.02)
    front = BlkfrontConfig(persistent=False, num_queues=2)
    try:
        with BlkifGuest(dom0, blkif_run_dir, tmp_path / "g.sock", front=front) as guest:
            assert guest.backend is not None
            runner.add(str(guest.backend), image, BlkbackConfig(persistent=False))
            ready = guest.boot()
            assert ready == {"size": image.stat().st_size, "queues": 2, "persistent": False}
            result = run_fio(guest.uri, VERIFY, timeout=120, fio=fio)
            assert result.write.ios > 0 and result.read.ios > 0
            served = sum(q.served for q in runner.backends[str(guest.backend)].queues)
            assert served >= result.write.ios + result.read.ios
            assert runner.engine.peak > 1  # requests ran side by side
            exported = export_bytes(guest.uri, tmp_path / "export.img")
            assert guest.stop() == 0
            assert image.read_bytes() == exported  # the image holds what the guest reads
            runner.remove(str(guest.backend))
    finally:
        runner.close()


def test_backend_killed_during_fio_is_replaced(
    dom0: Hypervisor, blkif_run_dir: Path, image: Path, tmp_path: Path,
    backends: list[BlkbackProcess],
) -> None:  # fmt: skip
    fio = require_tool("fio")
    front = BlkfrontConfig(num_queues=2, ring_page_order=1, indirect_segments=32)
    with BlkifGuest(dom0, blkif_run_dir, tmp_path / "r.sock", front=front) as guest, \
            ThreadPoolExecutor(1) as pool:  # fmt: skip
        assert guest.backend is not None and dom0.store is not None
        backend = str(guest.backend)
        backends.append(BlkbackProcess(blkif_run_dir, backend, image))
        guest.boot()
        untouched = image.stat().st_mtime_ns
        running = pool.submit(run_fio, guest.uri, VERIFY, timeout=180, fio=fio)
        assert wait_until(lambda: image.stat().st_mtime_ns != untouched, 30)  # fio writes
        time.sleep(0.1)
        assert not running.done(), "fio finished before the backend was killed"
        backends[-1].kill()
        time.sleep(0.3)  # requests pile up against the dead backend
        assert not running.done()
        backends.append(BlkbackProcess(blkif_run_dir, backend, image))
        result: FioResult = running.result(180)  # verify_fatal: any bad block fails fio
        assert result.write.ios > 0 and result.read.ios > 0
        progress = guest.progress()
        assert progress["reconnects"] >= 1 and progress["resubmitted"] >= 1
        assert read_state(dom0.store, backend) is XenbusState.CONNECTED
        exported = export_bytes(guest.uri, tmp_path / "export.img")
        assert guest.stop() >= 1
        assert wait_until(lambda: read_state(dom0.store, backend) is XenbusState.CLOSED, 10)  # type: ignore[union-attr]
        assert image.read_bytes() == exported
