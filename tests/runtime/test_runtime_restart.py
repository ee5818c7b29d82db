"""The backend process is killed (SIGKILL) while fio runs through a XenBus disk, and
started again: the guest driver reconnects and replays what was in flight, fio
completes and its crc32c verification passes; the image holds what the export shows.

virtio-pci and virtio-mmio devices do not survive a backend restart (docs/runtime.md):
the guest's device state lived in the dead device model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rt_support import export_digest, file_digest, fio_process, make_image

from xenvirtio.bench.fio import FioJob, parse_fio_json
from xenvirtio.hv.api import Hypervisor
from xenvirtio.runtime.domain import start_domain
from xenvirtio.runtime.specs import DiskSpec
from xenvirtio.runtime.supervisor import process_alive
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.hv_harness import wait_until

pytestmark = pytest.mark.interop

JOB = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=16, runtime_s=None,
             size="48M", verify="crc32c")  # fmt: skip


def test_fio_survives_a_backend_kill(hv: Hypervisor, run_dir: Path, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 48 << 20)
    spec = DiskSpec(devid=0, vdev="xvda", image=str(image), ring="packed")
    with start_domain(hv, "restart", 64, 1, "pv", [spec], run_dir=run_dir) as domain:
        endpoint = domain.endpoint("xvda")
        state = f"/local/domain/0/backend/virtio/{domain.domid}/0/state"
        assert hv.store is not None
        proc = fio_process(endpoint, JOB)
        try:
            time.sleep(0.5)
            assert proc.poll() is None, "fio finished before the kill"
            assert domain.backend is not None
            old = domain.backend.pid
            domain.backend.kill()
            assert not process_alive(old)
            time.sleep(0.3)
            domain.restart_backend()
            assert domain.backend.pid != old
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err[-2000:]
        result = parse_fio_json(out)
        assert result.write.ios > 0 and result.read.ios > 0
        connected = str(int(XenbusState.CONNECTED)).encode()
        assert wait_until(lambda: hv.store is not None and hv.store.read(state) == connected)
        assert domain.inspect().backend_alive
        assert wait_until(lambda: domain.endpoint("xvda").reconnects >= 1, 5)
        assert export_digest(endpoint, tmp_path) == file_digest(image)
