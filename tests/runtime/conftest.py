"""An emu host for the runtime tests (one per session), dom0's handles, and a check that
every test leaves nothing behind: no domain, backend process, XenStore device node or
run-directory file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rt_support import assert_clean

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu.host import HostStatus, start_host, stop_host
from xenvirtio.runtime import open_hypervisor
from xenvirtio.testing.hv_harness import process_alive


@pytest.fixture(scope="session")
def emu_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostStatus]:
    run_dir: Path = tmp_path_factory.mktemp("rt")
    status = start_host(run_dir)
    try:
        yield status
    finally:
        stop_host(run_dir)
        for pid in (status.hv_pid, status.zygote_pid, status.xenstored_pid):
            assert not process_alive(pid), f"process {pid} outlived `host stop`"


@pytest.fixture
def run_dir(emu_host: HostStatus) -> Path:
    return emu_host.run_dir


@pytest.fixture
def hv(emu_host: HostStatus) -> Iterator[Hypervisor]:
    """dom0's handles (the toolstack's); afterwards the host must be as before."""
    hv = open_hypervisor(run_dir=emu_host.run_dir)
    try:
        yield hv
        assert_clean(hv, emu_host)
    finally:
        hv.close()
