"""One emu host for the per-transport device tests, and dom0's toolstack handles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu.host import HostStatus, start_host, stop_host
from xenvirtio.runtime import open_hypervisor


@pytest.fixture(scope="session")
def emu_dev_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostStatus]:
    run_dir: Path = tmp_path_factory.mktemp("devemu")
    status = start_host(run_dir)
    try:
        yield status
    finally:
        stop_host(run_dir)


@pytest.fixture
def run_dir(emu_dev_host: HostStatus) -> Path:
    return emu_dev_host.run_dir


@pytest.fixture
def hv(run_dir: Path) -> Iterator[Hypervisor]:
    """dom0's handles for the test itself (the toolstack)."""
    hv = open_hypervisor(run_dir=run_dir)
    try:
        yield hv
    finally:
        hv.close()
