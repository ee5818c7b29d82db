"""An emu host for the ioreq transport tests, and a device-model host thread in dom0."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu.host import HostStatus, start_host, stop_host
from xenvirtio.runtime import open_hypervisor
from xenvirtio.testing.hv_harness import process_alive
from xenvirtio.transport.ioreq import HostThread


@pytest.fixture(scope="session")
def emu_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostStatus]:
    run_dir: Path = tmp_path_factory.mktemp("ioreq")
    status = start_host(run_dir)
    try:
        yield status
    finally:
        stop_host(run_dir)
        for pid in (status.hv_pid, status.zygote_pid, status.xenstored_pid):
            assert not process_alive(pid), f"process {pid} outlived `host stop`"
        assert not [p for p in os.listdir(run_dir) if p.endswith((".sock", ".pid"))]


@pytest.fixture
def hv(emu_host: HostStatus) -> Iterator[Hypervisor]:
    """dom0's handles for the test itself (the toolstack)."""
    hv = open_hypervisor(run_dir=emu_host.run_dir)
    try:
        yield hv
    finally:
        hv.close()


@pytest.fixture
def dm(emu_host: HostStatus) -> Iterator[HostThread]:
    """A device model in dom0: its own handles, its own loop thread."""
    dm_hv = open_hypervisor(run_dir=emu_host.run_dir)
    runner = HostThread(dm_hv)
    try:
        yield runner
    finally:
        runner.close()
        dm_hv.close()
        assert not runner.alive, "the device-model thread outlived close()"
