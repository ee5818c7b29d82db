"""An emu host for the virtio-over-XenBus tests (one per session), dom0's hypervisor and
an in-process backend runner serving on its own thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu import open_emu
from xenvirtio.hv.emu.host import HostStatus, start_host, stop_host
from xenvirtio.transport.xenbus import BackendRunner


@pytest.fixture(scope="session")
def xbt_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostStatus]:
    run_dir: Path = tmp_path_factory.mktemp("xbt")
    status = start_host(run_dir)
    try:
        yield status
    finally:
        stop_host(run_dir)


@pytest.fixture(scope="session")
def run_dir(xbt_host: HostStatus) -> Path:
    return xbt_host.run_dir


@pytest.fixture
def dom0(run_dir: Path) -> Iterator[Hypervisor]:
    hv = open_emu(run_dir)
    try:
        yield hv
    finally:
        hv.close()


@pytest.fixture
def runner(dom0: Hypervisor) -> Iterator[BackendRunner]:
    runner = BackendRunner(dom0)
    runner.start_thread(0.02)
    try:
        yield runner
    finally:
        runner.close()
