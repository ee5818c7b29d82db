"""Helpers for the virtio-over-XenBus tests: guest domains running the echo driver, and
backends in their own dom0 process (so one can be killed and restarted)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.xenbus.client import create_device, read_state, remove_device
from xenvirtio.hv.xenbus.paths import BackendPath, FrontendPath
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing import xenbus_guest
from xenvirtio.testing.hv_harness import wait_until

HERE = Path(__file__).parent


class GuestError(RuntimeError):
    pass


class GuestDomain:
    """A domain process running `xenbus_guest.serve`, driven over a unix socket."""

    def __init__(self, hv: Hypervisor, run_dir: Path, name: str, memory_mb: int = 16) -> None:
        self.hv = hv
        path = run_dir / f"{name}-{os.getpid()}.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._listener.settimeout(30)
        self._path = path
        self.domid = hv.domctl.create(
            memory_mb, name=name, kernel=xenbus_guest.serve, cmdline=str(path)
        )
        try:
            hv.domctl.unpause(self.domid)
            sock, _ = self._listener.accept()
        except BaseException:
            self.destroy()
            raise
        sock.settimeout(60)
        self._sock = sock
        self._file = sock.makefile("rwb")
        hello = json.loads(self._file.readline())
        assert hello["domid"] == self.domid

    def call(self, op: str, **args: Any) -> Any:
        self._file.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise GuestError(f"domain {self.domid} went away")
        answer = json.loads(line)
        if "error" in answer:
            raise GuestError(answer["error"] + "\n" + answer.get("trace", ""))
        return answer["ok"]

    def destroy(self) -> None:
        for closer in (getattr(self, "_file", None), getattr(self, "_sock", None)):
            if closer is not None:
                with contextlib.suppress(OSError):
                    closer.close()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        with contextlib.suppress(OSError):
            self.hv.domctl.destroy(self.domid)


def plug(hv: Hypervisor, fe_domid: int, devid: int = 0) -> tuple[FrontendPath, BackendPath]:
    """Create a virtio device's two directories, as a toolstack does."""
    assert hv.store is not None
    return create_device(hv.store, 0, fe_domid, "virtio", devid)


def unplug(hv: Hypervisor, backend: BackendPath) -> None:
    assert hv.store is not None
    with contextlib.suppress(OSError):
        remove_device(hv.store, backend)


def backend_state(hv: Hypervisor, backend: BackendPath) -> XenbusState:
    assert hv.store is not None
    return read_state(hv.store, str(backend))


def wait_state(
    hv: Hypervisor, backend: BackendPath, state: XenbusState, timeout: float = 10
) -> bool:
    return wait_until(lambda: backend_state(hv, backend) is state, timeout)


class BackendProcess:
    """`backend_proc.py` serving one device from its own dom0 process."""

    def __init__(
        self, run_dir: Path, backend: BackendPath, grant_usage: bool = True, device: str = "echo"
    ) -> None:
        args = [sys.executable, str(HERE / "backend_proc.py"), str(run_dir), str(backend)]
        args += ["1" if grant_usage else "0", device]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.kill()
            raise RuntimeError(f"backend process did not start: {line!r}")

    def kill(self) -> None:
        """SIGKILL: the process dies holding its mappings and ports, as a crash does."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def settle(seconds: float = 0.05) -> None:
    time.sleep(seconds)
