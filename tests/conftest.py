"""Shared test configuration.

Interop tests drive real peers through `xenvirtio.testing.tools.require_tool`, which fails
(never skips) when a peer is missing.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from xenvirtio.testing.tools import require_tool

__all__ = ["require_tool"]

# Hypothesis: no per-example deadline (the machine is shared and timing is not what these
# tests check); CI runs a fixed, derandomised budget so a run is repeatable.
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
