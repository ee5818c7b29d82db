"""A backend process, a guest process or xenstored killed while a guest does I/O:
`list` tells the truth, `destroy` and `host stop` clean everything up."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from ts_support import config, device, fio_background, image, listing, xv

from xenvirtio.bench.fio import FioJob
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.runtime.layout import DomainDir
from xenvirtio.runtime.supervisor import find_backend
from xenvirtio.testing.hv_harness import process_alive, wait_until

IO = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=8, runtime_s=30.0, size="4M")


def _start(status: HostStatus, tmp_path: Path) -> tuple[int, int]:
    image(tmp_path / "f.img")
    cfg = config(tmp_path / "f.cfg", 'name = "faulty"\nmemory = 32\ndisk = [ "f.img,,xvda" ]\n')
    assert xv(status.run_dir, "create", str(cfg)).exit_code == 0
    (dom,) = listing(status.run_dir)
    backend = find_backend(DomainDir(status.run_dir, dom["domid"]))
    assert backend is not None
    return dom["domid"], backend.pid


def _guest_pid(status: HostStatus, domid: int) -> int:
    from xenvirtio.runtime import open_hypervisor

    with open_hypervisor(run_dir=status.run_dir) as hv:
        pid = hv.domctl.info(domid).pid
    assert pid is not None
    return pid


@pytest.mark.parametrize("victim", ["backend", "guest", "xenstored"])
def test_kill_during_io(own_host: HostStatus, tmp_path: Path, victim: str) -> None:
    domid, backend_pid = _start(own_host, tmp_path)
    io = fio_background(device(own_host.run_dir, "faulty", "xvda"), IO)
    try:
        pid = {"backend": backend_pid, "guest": _guest_pid(own_host, domid),
               "xenstored": own_host.xenstored_pid}[victim]  # fmt: skip
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not process_alive(pid), 10)
        expected = {"backend": "degraded", "guest": "crashed", "xenstored": "running"}[victim]
        told = lambda: listing(own_host.run_dir)[0]["state"] == expected  # noqa: E731
        assert wait_until(told, 10), listing(own_host.run_dir)
        (dom,) = listing(own_host.run_dir)
        (disk,) = dom["devices"]
        if victim == "xenstored":
            assert not dom["xenstore"] and disk["state"] == "unknown"
            time.sleep(1.0)  # the guest kernel polls XenStore every 0.2 s: it must survive
            assert listing(own_host.run_dir)[0]["state"] == "running"
        else:
            assert disk["state"] == "down" and disk["nbd_socket"] is None, disk
        assert dom["backend"]["alive"] == (victim != "backend")
        result = xv(own_host.run_dir, "destroy", "faulty")
        assert result.exit_code == 0, result.stderr
        assert listing(own_host.run_dir) == []
        assert wait_until(lambda: not process_alive(backend_pid), 10)
    finally:
        io.kill()
        io.communicate(timeout=30)
    assert not (own_host.run_dir / "domains" / str(domid)).exists()
