"""An emu host for the toolstack tests (one per session, and a private one for tests
that break it), and a check after every test that nothing of its domains is left."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ts_support import assert_host_gone, assert_nothing_left

from xenvirtio.hv.emu.host import HostStatus, start_host, stop_host


@pytest.fixture(scope="session")
def session_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostStatus]:
    status = start_host(tmp_path_factory.mktemp("ts"))
    try:
        yield status
    finally:
        stop_host(status.run_dir)
        assert_host_gone(status)


@pytest.fixture
def emu(session_host: HostStatus) -> Iterator[HostStatus]:
    """The shared host; afterwards it must hold nothing of the test's domains."""
    yield session_host
    assert_nothing_left(session_host)


@pytest.fixture
def own_host(tmp_path: Path) -> Iterator[HostStatus]:
    """A host of the test's own (for tests that kill its daemons); stopped at the end
    with nothing left behind."""
    status = start_host(tmp_path / "run")
    try:
        yield status
    finally:
        stop_host(status.run_dir)
        assert_host_gone(status)
