"""Helpers for the toolstack end-to-end tests: run a command, write configs and images,
fio through a device's NBD socket as `list --json` gives it, and check what is left."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from xenvirtio.bench.fio import FioJob, fio_command, run_fio
from xenvirtio.cli import cli
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.runtime import open_hypervisor
from xenvirtio.testing.hv_harness import process_alive, wait_until
from xenvirtio.testing.tools import require_tool

FIO_VERIFY = FioJob(rw="randrw", rwmixread=50, bs="4k", iodepth=8, runtime_s=None,
                    size="2M", verify="crc32c")  # fmt: skip


def xv(run_dir: Path, *args: str) -> Result:
    """``xenvirtio ARGS --run-dir RUN_DIR`` in this process (stderr kept apart)."""
    return CliRunner().invoke(cli, [*args, "--run-dir", str(run_dir)])


def listing(run_dir: Path) -> list[dict[str, Any]]:
    result = xv(run_dir, "list", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def device(run_dir: Path, domain: str, name: str) -> dict[str, Any]:
    (dom,) = [d for d in listing(run_dir) if d["name"] == domain]
    (dev,) = [d for d in dom["devices"] if d["name"] == name]
    return dev


def image(path: Path, size: int = 8 << 20) -> Path:
    path.write_bytes(bytes(size))
    return path


def config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def uri(dev: dict[str, Any]) -> str:
    assert dev["state"] == "ready" and dev["nbd_socket"], dev
    return f"nbd+unix:///{dev['name']}?socket={dev['nbd_socket']}"


def fio_verify(dev: dict[str, Any], job: FioJob = FIO_VERIFY) -> None:
    result = run_fio(uri(dev), job, timeout=120, fio=require_tool("fio"))
    assert result.read.ios > 0 and result.write.ios > 0


def fio_background(dev: dict[str, Any], job: FioJob) -> subprocess.Popen[str]:
    command = fio_command(uri(dev), job, require_tool("fio"))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stray_processes(status: HostStatus) -> list[int]:
    """Processes besides the host's daemons whose command line names its run dir
    (backends), or that descend from it (domain processes are forked by its zygote)."""
    daemons = {status.hv_pid, status.zygote_pid, status.xenstored_pid}
    needle = str(status.run_dir).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in daemons or not process_alive(int(entry)):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError):
            continue
        if needle in cmdline or ppid == status.zygote_pid:
            found.append(int(entry))
    return found


def assert_nothing_left(status: HostStatus) -> None:
    """No guest domain, backend or domain process, XenStore device node, or domain file."""
    with open_hypervisor(run_dir=status.run_dir) as hv:
        assert [d.domid for d in hv.domctl.list() if not d.privileged] == []
        assert hv.store is not None
        assert hv.store.directory("/local/domain") == ["0"]
        backends = "/local/domain/0/backend/virtio"
        assert not hv.store.exists(backends) or hv.store.directory(backends) == []
    assert wait_until(lambda: not stray_processes(status), 10), stray_processes(status)
    domains = status.run_dir / "domains"
    assert not domains.exists() or list(domains.iterdir()) == []


def assert_host_gone(status: HostStatus) -> None:
    """After `host stop`: no daemon, no process of the host, no socket or pid file."""
    for pid in (status.hv_pid, status.zygote_pid, status.xenstored_pid):
        assert not process_alive(pid), f"process {pid} outlived `host stop`"
    assert wait_until(lambda: not stray_processes(status), 10), stray_processes(status)
    left = sorted(p.name for p in status.run_dir.iterdir() if not p.name.endswith(".log"))
    assert left in ([], ["domains"]), left
    domains = status.run_dir / "domains"
    assert not domains.exists() or list(domains.iterdir()) == []
