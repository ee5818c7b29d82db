"""An emu host for the netif tests (one per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.emu.host import start_host, stop_host


@pytest.fixture(scope="session")
def netif_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    run_dir: Path = tmp_path_factory.mktemp("netif")
    status = start_host(run_dir)
    try:
        yield status.run_dir
    finally:
        stop_host(run_dir)
