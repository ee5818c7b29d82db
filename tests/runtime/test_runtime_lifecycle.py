"""Starting, inspecting and stopping domains: a failing device leaves nothing behind, a
domain can be stopped from another process's view (run directory and XenStore), a
backend exits with its domain, and the backend command refuses bad specs by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rt_support import host_processes, make_image

from xenvirtio.cli.backend import backend
from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.runtime.domain import DomainStartError, inspect, start_domain, stop_domain
from xenvirtio.runtime.specs import DiskSpec
from xenvirtio.runtime.supervisor import process_alive
from xenvirtio.testing.hv_harness import wait_until


def test_missing_image_rolls_everything_back(
    hv: Hypervisor, run_dir: Path, tmp_path: Path, emu_host: HostStatus
) -> None:
    good = DiskSpec(devid=0, vdev="xvda", image=str(make_image(tmp_path / "a.img")))
    missing = DiskSpec(devid=1, vdev="xvdb", image=str(tmp_path / "missing.img"))
    before = {d.domid for d in hv.domctl.list()}
    with pytest.raises(DomainStartError, match=r"missing\.img"):
        start_domain(hv, "broken", 32, 1, "pv", [good, missing], run_dir=run_dir)
    assert {d.domid for d in hv.domctl.list()} == before
    assert hv.store is not None and hv.store.directory("/local/domain") == ["0"]
    assert not hv.store.exists("/local/domain/0/backend/virtio")
    assert list((run_dir / "domains").iterdir()) == []
    assert host_processes(emu_host) == []


def test_guest_not_ready_in_time_rolls_back(hv: Hypervisor, run_dir: Path, tmp_path: Path) -> None:
    """Failing after the unpause (domain running, backend serving) undoes it all too;
    the hv fixture then checks nothing is left."""
    spec = DiskSpec(devid=2, vdev="xvdc", image=str(make_image(tmp_path / "c.img")),
                    transport="mmio")  # fmt: skip
    with pytest.raises(DomainStartError, match="not ready"):
        start_domain(hv, "no-disk", 32, 1, "hvm", [spec], run_dir=run_dir,
                     ready_timeout=0.0)  # fmt: skip


def test_inspect_and_stop_from_another_view(hv: Hypervisor, run_dir: Path, tmp_path: Path) -> None:
    spec = DiskSpec(devid=3, vdev="vdd", image=str(make_image(tmp_path / "d.img")), transport="pci")
    domain = start_domain(hv, "viewed", 64, 1, "hvm", [spec], run_dir=run_dir)
    try:
        view = inspect(hv, domain.domid, run_dir)
        assert view.name == "viewed" and view.backend_alive
        assert domain.backend is not None and view.backend_pid == domain.backend.pid
        (endpoint,) = view.devices
        assert (endpoint.name, endpoint.kind, endpoint.transport) == ("vdd", "disk", "pci")
        assert endpoint.nbd is not None and endpoint.nbd.is_socket()
        pid = view.backend_pid
        assert pid is not None
    finally:
        stop_domain(hv, domain.domid, run_dir)
    assert not process_alive(pid)


def test_backend_exits_when_its_domain_is_destroyed(
    hv: Hypervisor, run_dir: Path, tmp_path: Path
) -> None:
    spec = DiskSpec(devid=0, vdev="xvda", image=str(make_image(tmp_path / "e.img")))
    domain = start_domain(hv, "gone", 32, 1, "pv", [spec], run_dir=run_dir)
    try:
        assert domain.backend is not None
        hv.domctl.destroy(domain.domid)
        assert wait_until(lambda: domain.backend is not None and not domain.backend.alive(), 5)
        assert "is gone" in (domain.dir.backend_log.read_text())
    finally:
        domain.stop()


def test_backend_command_names_the_bad_field(run_dir: Path) -> None:
    bad = json.dumps([{"kind": "disk", "devid": 0, "vdev": "xvda", "image": "/x", "queues": 99}])
    result = CliRunner().invoke(backend, ["--run-dir", str(run_dir), "--domid", "5",
                                          "--spec", bad])  # fmt: skip
    assert result.exit_code == 2
    assert "devices[0].queues" in result.output
