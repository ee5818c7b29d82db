"""Fixtures of the XenStore daemon and client tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .xs_io_helpers import DaemonProcess, start_daemon


@pytest.fixture(scope="module")
def xenstored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon per test module; tests use their own paths in the store."""
    daemon = start_daemon(tmp_path_factory.mktemp("xenstored"))
    yield daemon
    assert daemon.alive(), "the daemon died during the tests"
    assert daemon.stop() == 0
