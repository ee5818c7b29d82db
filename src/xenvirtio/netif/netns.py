"""Running a function inside a named network namespace.

A network namespace belongs to a thread, not to the process (setns(2) with CLONE_NEWNET
moves only the caller), so `run_in_netns` enters the namespace on a short-lived helper
thread and returns what the function returned there. File descriptors it opens (a TAP
queue, a socket) keep their namespace and work from any thread afterwards: that is how a
TAP device is created directly inside a guest's or backend's namespace without ever
appearing in the host's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from pyroute2 import netns as _netns

R = TypeVar("R")
_TIMEOUT = 30.0


def enter_netns(name: str) -> None:
    """Move the calling thread (only) into network namespace ``name``: a thread that
    lives there makes its TAPs and netlink sockets there without forking a helper."""
    _netns.setns(name, flags=0, fork=False)


def run_in_netns(name: str | None, fn: Callable[[], R]) -> R:
    """``fn()`` run in network namespace ``name`` (None: the caller's, on this thread)."""
    if name is None:
        return fn()
    box: dict[str, object] = {}

    def body() -> None:
        try:
            enter_netns(name)
            box["value"] = fn()
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(_TIMEOUT)
    if thread.is_alive():
        raise TimeoutError(f"function in netns {name!r} did not return in {_TIMEOUT} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
