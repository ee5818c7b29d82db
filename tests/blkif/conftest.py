"""An emu host for the blkif tests (one per session) and dom0's hypervisor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.emu.host import start_host, stop_host


@pytest.fixture(scope="session")
def blkif_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    run_dir: Path = tmp_path_factory.mktemp("blkif")
    status = start_host(run_dir)
    try:
        yield status.run_dir
    finally:
        stop_host(run_dir)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (16 << 20 >> 8))
    return path
