"""The backend process of a domain: started, watched and stopped by the runtime.

`BackendProcess.spawn` runs ``xenvirtio backend`` in a session of its own (it outlives
the toolstack command that started it, as QEMU outlives ``xl create``), its output in
``backend.log``, and returns once it says it serves every device, or raises
`BackendStartError` with the end of its log. Its pid goes to ``backend.pid`` so another
process can find it (`find_backend`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xenvirtio.runtime.layout import DomainDir

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class BackendStartError(RuntimeError):
    """The backend process exited or stayed silent instead of serving."""


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@dataclass
class BackendProcess:
    pid: int
    proc: subprocess.Popen[bytes] | None = None  # None: found through the pid file

    @classmethod
    def spawn(
        cls, run_dir: Path, domain: DomainDir, *, timeout: float = START_TIMEOUT
    ) -> BackendProcess:
        args = [sys.executable, "-m", "xenvirtio", "backend", "--run-dir", str(run_dir),
                "--domid", str(domain.domid), "--spec", str(domain.spec_file)]  # fmt: skip
        read_fd, write_fd = os.pipe()
        try:
            with open(domain.backend_log, "ab") as log:
                proc = subprocess.Popen(
                    [*args, "--ready-fd", str(write_fd)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=(write_fd,), start_new_session=True,
                )  # fmt: skip
            os.close(write_fd)
            write_fd = -1
            backend = cls(proc.pid, proc)
            domain.backend_pid.write_text(f"{proc.pid}\n")
            try:
                _wait_ready(read_fd, proc, timeout, domain.backend_log)
            except BaseException:
                backend.stop(0)
                raise
            return backend
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return process_alive(self.pid)

    def kill(self) -> None:
        """SIGKILL: the process dies holding its mappings and ports, as a crash does."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._wait(STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout`` s."""
        if not self.alive():
            self._wait(0)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self._wait(timeout):
            self.kill()

    def _wait(self, timeout: float) -> bool:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while process_alive(self.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


def _wait_ready(fd: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    ready, _, _ = select.select([fd], [], [], timeout)
    line = os.read(fd, 64) if ready else b""
    if line.strip() == b"ready":
        return
    try:
        code = proc.wait(1.0)
    except subprocess.TimeoutExpired:
        code = None
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    what = f"exited with status {code}" if code is not None else "did not get ready"
    raise BackendStartError(f"backend {what}:\n{tail}")


def find_backend(domain: DomainDir) -> BackendProcess | None:
    """The backend process recorded for ``domain`` (None if none is recorded)."""
    try:
        text = domain.backend_pid.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not 1 < int(text) < 1 << 22:
        return None
    return BackendProcess(int(text))
