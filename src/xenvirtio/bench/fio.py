"""fio through an NBD socket: run it, parse its JSON, and a baseline served by nbdkit.

``run_fio(uri, job)`` drives fio's ``nbd`` engine (libnbd) against any NBD URI and returns
IOPS, MB/s and completion-latency percentiles per direction. The baseline serves the same
image with ``nbdkit file`` so a run of ours can be printed beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class FioError(RuntimeError):
    """fio failed, reported an error, or printed no JSON."""


@dataclass(frozen=True)
class FioJob:
    """One fio job. ``runtime_s`` makes it time-based; ``verify`` (e.g. "crc32c") writes
    checksummed blocks and reads them back, which needs a write workload and no time limit."""

    rw: str = "randrw"
    rwmixread: int = 70
    bs: str = "4k"
    iodepth: int = 16
    runtime_s: float | None = 5.0
    size: str | None = None  # default: the whole export
    verify: str | None = None
    name: str = "nbd"

    def args(self) -> list[str]:
        args = [
            f"--name={self.name}",
            f"--rw={self.rw}",
            f"--rwmixread={self.rwmixread}",
            f"--bs={self.bs}",
            f"--iodepth={self.iodepth}",
            "--group_reporting",
            "--output-format=json",
        ]
        if self.runtime_s is not None:
            args += ["--time_based", f"--runtime={self.runtime_s:g}"]
        if self.size is not None:
            args.append(f"--size={self.size}")
        if self.verify is not None:
            args += [f"--verify={self.verify}", "--verify_fatal=1", "--verify_state_save=0"]
        return args


@dataclass(frozen=True)
class FioFigures:
    """One direction of a run. Latencies are completion latencies (fio's clat)."""

    iops: float
    mb_per_s: float  # 10^6 bytes per second
    lat_p50_us: float
    lat_p99_us: float
    ios: int


@dataclass(frozen=True)
class FioResult:
    read: FioFigures
    write: FioFigures

    @property
    def iops(self) -> float:
        return self.read.iops + self.write.iops

    @property
    def mb_per_s(self) -> float:
        return self.read.mb_per_s + self.write.mb_per_s


def fio_command(uri: str, job: FioJob, fio: str = "fio") -> list[str]:
    """The fio command line for ``job`` on the NBD export at ``uri``."""
    return [fio, "--ioengine=nbd", f"--uri={uri}", *job.args()]


def _figures(side: dict[str, Any]) -> FioFigures:
    percentiles = side.get("clat_ns", {}).get("percentile", {})
    return FioFigures(
        iops=float(side["iops"]),
        mb_per_s=float(side["bw_bytes"]) / 1e6,
        lat_p50_us=float(percentiles.get("50.000000", 0)) / 1e3,
        lat_p99_us=float(percentiles.get("99.000000", 0)) / 1e3,
        ios=int(side["total_ios"]),
    )


def parse_fio_json(text: str) -> FioResult:
    """Figures from fio's ``--output-format=json`` output.

    The nbd engine prints "fio: connected to NBD server" on stdout before the JSON; the
    document starts at the first line that is a lone "{".
    """
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "{")
        doc = json.loads("\n".join(lines[start:]))
        job = doc["jobs"][0]
    except (StopIteration, ValueError, KeyError, IndexError) as exc:
        raise FioError(f"no fio JSON in output: {text[:200]!r}") from exc
    if job.get("error"):
        raise FioError(f"fio job {job.get('jobname')!r} failed with error {job['error']}")
    return FioResult(read=_figures(job["read"]), write=_figures(job["write"]))


def run_fio(uri: str, job: FioJob, *, timeout: float = 300.0, fio: str = "fio") -> FioResult:
    """Run fio against ``uri`` and return its figures; raises FioError if fio fails."""
    command = fio_command(uri, job, fio)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise FioError(f"fio ran longer than {timeout} s") from exc
    if done.returncode != 0:
        raise FioError(f"fio exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse_fio_json(done.stdout)


class NbdkitFileServer:
    """``nbdkit file`` serving ``image`` on a Unix socket: the baseline server.

    ``with NbdkitFileServer(image, sock) as server: run_fio(server.uri, job)``. Ready once
    nbdkit writes its pid file (it does so when it accepts connections); torn down with
    SIGTERM (SIGKILL if it lingers), socket and pid file removed.
    """

    def __init__(
        self, image: Path, socket: Path, *, nbdkit: str = "nbdkit", ready_timeout: float = 10.0
    ) -> None:
        self.image, self.socket = Path(image), Path(socket)
        self._pidfile = self.socket.with_name(self.socket.name + ".pid")
        self._log = self.socket.with_name(self.socket.name + ".log")
        self._command = [
            nbdkit,
            "--unix",
            str(self.socket),
            "--foreground",
            "--exit-with-parent",
            "--pidfile",
            str(self._pidfile),
            "file",
            str(self.image),
        ]
        self._ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    def __enter__(self) -> NbdkitFileServer:
        self._pidfile.unlink(missing_ok=True)  # a stale one would read as "ready"
        with open(self._log, "wb") as log:  # nbdkit's stderr, kept for error messages
            self._process = subprocess.Popen(self._command, stderr=log)
        deadline = time.monotonic() + self._ready_timeout
        while not (self._pidfile.exists() and self._pidfile.stat().st_size):
            if self._process.poll() is not None:
                err = self._log.read_text(errors="replace").strip()
                self.__exit__()
                raise FioError(f"nbdkit exited {self._process.returncode}: {err}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise FioError(f"nbdkit not ready after {self._ready_timeout} s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for path in (self.socket, self._pidfile, self._log):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def run_nbdkit_baseline(
    image: Path, job: FioJob, workdir: Path, *, timeout: float = 300.0
) -> FioResult:
    """The same fio job against ``nbdkit file`` serving ``image``."""
    with NbdkitFileServer(image, workdir / "nbdkit.sock") as server:
        return run_fio(server.uri, job, timeout=timeout)


@contextlib.contextmanager
def xenvirtio_file_export(image: Path, socket: Path, **server_args: Any) -> Iterator[str]:
    """Our NBD server over a FileBackend for ``image``; yields its URI."""
    from xenvirtio.nbd.file_backend import FileBackend
    from xenvirtio.nbd.threaded import ThreadedNbdServer

    with FileBackend(image) as backend, ThreadedNbdServer(backend, socket, **server_args) as srv:
        yield srv.uri
