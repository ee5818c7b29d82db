"""External programs the interop tests drive.

The tests talk to real peers (Xen's xenstore-* tools, fio, iperf3, nbdkit, QEMU) that
`make setup` installs. A missing peer fails the test loudly, never skips it: CI must not
pass without having talked to the real thing.
"""

from __future__ import annotations

import shutil

import pytest


def require_tool(name: str) -> str:
    """Return the path of an external program, failing the test if it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool {name!r} is not installed; run `make setup`", pytrace=False)
    return path
