"""An emu host (hypervisor + XenStore daemons) for the hv tests, stopped at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.emu.host import HostStatus, start_host, stop_host
from xenvirtio.testing.hv_harness import EmuHarness, process_alive


@pytest.fixture(scope="session")
def emu_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostStatus]:
    run_dir: Path = tmp_path_factory.mktemp("hv")
    status = start_host(run_dir)
    try:
        yield status
    finally:
        stop_host(run_dir)
        for pid in (status.hv_pid, status.zygote_pid, status.xenstored_pid):
            assert not process_alive(pid), f"process {pid} outlived `host stop`"
        assert not [p for p in os.listdir(run_dir) if p.endswith((".sock", ".pid"))]


@pytest.fixture(params=["inproc", "process"], ids=["emu-inproc", "emu-process"])
def hv_harness(request: pytest.FixtureRequest, emu_host: HostStatus) -> Iterator[EmuHarness]:
    harness = EmuHarness(emu_host.run_dir, request.param)
    try:
        yield harness
    finally:
        harness.close()
