"""Shared fixtures.

Interop tests drive real peers (Xen's xenstore-* tools, fio, iperf3, nbdkit, QEMU) that
`make setup` installs. A missing peer is a failure, never a skip: CI must not pass
without having talked to the real thing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Return the path of an external program, failing the test loudly if it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool {name!r} is not installed; run `make setup`", pytrace=False)
    return path


# Hypothesis: no per-example deadline (the machine is shared and timing is not what these
# tests check); CI runs a fixed, derandomised budget so a run is repeatable.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=100,
    derandomize=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")
