"""Helpers for the runtime tests: images, fio through a guest's NBD export, comparing
what the export and the image file hold, and what a test left on the host."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from xenvirtio.bench.fio import FioJob, fio_command, run_fio
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.runtime.domain import DeviceEndpoint
from xenvirtio.testing.hv_harness import process_alive, wait_until
from xenvirtio.testing.tools import require_tool

SIZE = 8 << 20
FIO_JOB = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=16, runtime_s=None,
                 size="4M", verify="crc32c")  # fmt: skip


def make_image(path: Path, size: int = SIZE) -> Path:
    path.write_bytes(bytes(size))
    return path


def nbd_uri(endpoint: DeviceEndpoint) -> str:
    assert endpoint.state == "ready" and endpoint.nbd is not None, endpoint
    return f"nbd+unix:///{endpoint.name}?socket={endpoint.nbd}"


def fio(endpoint: DeviceEndpoint, job: FioJob = FIO_JOB) -> None:
    result = run_fio(nbd_uri(endpoint), job, timeout=120, fio=require_tool("fio"))
    assert result.read.ios > 0 and result.write.ios > 0


def fio_process(endpoint: DeviceEndpoint, job: FioJob) -> subprocess.Popen[str]:
    command = fio_command(nbd_uri(endpoint), job, require_tool("fio"))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def export_digest(endpoint: DeviceEndpoint, tmp: Path) -> str:
    """SHA-256 of the whole export, copied out with nbdcopy."""
    copy = tmp / f"{endpoint.name}.copy"
    subprocess.run([require_tool("nbdcopy"), nbd_uri(endpoint), str(copy)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    copy.unlink()
    return digest


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_processes(status: HostStatus) -> list[int]:
    """Processes other than the host's daemons whose command line names the run dir:
    backend processes and domain processes (forked from the daemon)."""
    daemons = {status.hv_pid, status.zygote_pid, status.xenstored_pid}
    found = []
    needle = str(status.run_dir).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in daemons or not process_alive(int(entry)):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def assert_clean(hv: Hypervisor, status: HostStatus) -> None:
    assert hv.store is not None
    assert [d.domid for d in hv.domctl.list() if not d.privileged] == []
    assert wait_until(lambda: not host_processes(status), 10), host_processes(status)
    backends = "/local/domain/0/backend/virtio"
    assert not hv.store.exists(backends) or hv.store.directory(backends) == []
    domains = status.run_dir / "domains"
    assert not domains.exists() or list(domains.iterdir()) == []
