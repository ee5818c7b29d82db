"""Start, stop and inspect an emu host: the hypervisor daemon and its XenStore daemon.

Both run in the background with their files in one run directory:
``hv.sock``/``hv.pid``/``hv.log`` and ``xenstored.sock``/``xenstored.pid``/``xenstored.log``.
:func:`start_host` returns once both sockets answer; :func:`stop_host` destroys every
domain, stops both daemons and waits until their processes are gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.emu import xenstored
from xenvirtio.hv.emu.client import HV_SOCKET, Connection
from xenvirtio.hv.emu.daemon import PID_FILE as HV_PID_FILE
from xenvirtio.xenstore.client import XenstoreClient

HV_MODULE = "xenvirtio.hv.emu.daemon"
XENSTORED_MODULE = "xenvirtio.hv.emu.xenstored"


class HostError(RuntimeError):
    """The host could not be started or stopped as asked."""


@dataclass(frozen=True)
class HostStatus:
    run_dir: Path
    hv_pid: int | None
    zygote_pid: int | None
    xenstored_pid: int | None
    domains: list[dict[str, Any]]
    details: dict[str, Any]


def _ping(run_dir: Path) -> dict[str, Any] | None:
    try:
        conn = Connection.connect(run_dir)
    except HypervisorError:
        return None
    try:
        return dict(conn.call("status").value)
    except OSError:
        return None
    finally:
        conn.close()


def _xenstore_ready(run_dir: Path) -> bool:
    path = run_dir / xenstored.SOCKET
    if not path.exists():
        return False
    try:
        with XenstoreClient.connect(str(path)) as xs:
            xs.read("/")
        return True
    except OSError:
        return False


def _spawn(module: str, run_dir: Path, log_name: str) -> subprocess.Popen[bytes]:
    with open(run_dir / log_name, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, "--run-dir", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def _wait_ready(
    proc: subprocess.Popen[bytes], ready: Any, what: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise HostError(f"{what} exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise HostError(f"{what} not ready after {timeout:.0f} s; see {log}")
        time.sleep(0.02)


def start_host(run_dir: str | os.PathLike[str], timeout: float = 30.0) -> HostStatus:
    """Start the hypervisor daemon, then XenStore; return when both answer."""
    run = Path(run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    if _ping(run) is not None:
        raise HostError(f"an emu host is already running in {run}")
    hv = _spawn(HV_MODULE, run, "hv.log")
    _wait_ready(
        hv, lambda: _ping(run) is not None, "the hypervisor daemon", run / "hv.log", timeout
    )
    xs = _spawn(XENSTORED_MODULE, run, "xenstored.log")
    try:
        _wait_ready(xs, lambda: _xenstore_ready(run), "xenstored", run / "xenstored.log", timeout)
    except HostError:
        stop_host(run)
        raise
    return host_status(run)


def _read_pid(path: Path, module: str) -> int | None:
    """The pid in ``path`` if it still runs ``module`` (a stale pid file may name
    an unrelated process by now)."""
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if module.encode() in cmdline else None


def _gone(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if waited == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.01)


def stop_host(run_dir: str | os.PathLike[str], timeout: float = 15.0) -> None:
    """Stop XenStore and the hypervisor (destroying every domain); wait for both."""
    run = Path(run_dir).resolve()
    xs_pid = _read_pid(run / xenstored.PID_FILE, XENSTORED_MODULE)
    hv_pid = _read_pid(run / HV_PID_FILE, HV_MODULE)
    if xs_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(xs_pid, signal.SIGTERM)
        _wait_gone(xs_pid, timeout)
    if hv_pid is not None:
        try:
            conn = Connection.connect(run)
            with contextlib.suppress(OSError):
                conn.call("shutdown_host")
            conn.close()
        except HypervisorError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hv_pid, signal.SIGTERM)
        _wait_gone(hv_pid, timeout)
    for name in (HV_SOCKET, HV_PID_FILE, xenstored.SOCKET, xenstored.PID_FILE):
        with contextlib.suppress(FileNotFoundError):
            (run / name).unlink()


def host_status(run_dir: str | os.PathLike[str]) -> HostStatus:
    run = Path(run_dir).resolve()
    details = _ping(run) or {}
    xs_pid = _read_pid(run / xenstored.PID_FILE, XENSTORED_MODULE) if _xenstore_ready(run) else None
    return HostStatus(
        run_dir=run,
        hv_pid=details.get("pid"),
        zygote_pid=details.get("zygote_pid"),
        xenstored_pid=xs_pid,
        domains=list(details.get("domains", [])),
        details=details,
    )
