"""Baselines for the XenStore benchmark: Xen's C xenstored, and a unix-socket echo.

The echo server answers each message with the same bytes, through the same asyncio event
loop machinery a Python daemon uses; its round trip is the floor under any per-request
work a daemon does. Run as ``python -m xenvirtio.bench.xenstore_baseline --echo PATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from xenvirtio.xenstore.client import XenstoreClient
from xenvirtio.xenstore.wire import HEADER as XSD_SOCKMSG

# An XS_READ of "/bench/key": what one request of the read workload puts on the wire.
MESSAGE = XSD_SOCKMSG.pack(2, 1, 0, 11) + b"/bench/key\0"
C_XENSTORED_CANDIDATES = ("/usr/sbin/xenstored", "/usr/lib/xen-*/bin/xenstored")


@dataclass
class Result:
    """One workload's figures."""

    name: str
    clients: int
    ops: int
    seconds: float
    latencies_ns: list[int]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in microseconds."""
        if not self.latencies_ns:
            return 0.0
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    def row(self) -> str:
        return (
            f"{self.name:<24} {self.clients:>7} {self.rate:>11,.0f} "
            f"{self.percentile(0.5):>9.1f} {self.percentile(0.99):>9.1f}"
        )


TABLE_HEADER = f"{'workload':<24} {'clients':>7} {'ops/s':>11} {'p50 us':>9} {'p99 us':>9}"


class Placement:
    """Which CPUs the server and the benchmark run on.

    A synchronous round trip is two wake-ups; across CPUs each costs an inter-processor
    interrupt (tens of microseconds in a VM), so 1-client workloads share one CPU.
    Throughput workloads give the server and the load generator a CPU each. Without two
    CPUs nothing is pinned.
    """

    def __init__(self, pin: bool = True) -> None:
        self.original = os.sched_getaffinity(0)
        self.cpus = sorted(self.original)
        self.pin = pin

    @property
    def enabled(self) -> bool:
        return self.pin and len(self.cpus) >= 2

    def shared(self, server_pid: int) -> None:
        if self.enabled:
            os.sched_setaffinity(server_pid, {self.cpus[0]})
            os.sched_setaffinity(0, {self.cpus[0]})

    def spread(self, server_pid: int) -> None:
        if self.enabled:
            os.sched_setaffinity(server_pid, {self.cpus[0]})
            os.sched_setaffinity(0, {self.cpus[1]})

    def restore(self) -> None:
        os.sched_setaffinity(0, self.original)

    def describe(self) -> str:
        if not self.pin:
            return "not pinned: the scheduler places server and clients"
        if not self.enabled:
            return "one CPU: server and clients share it"
        return (
            f"1-client rows: server and client on CPU {self.cpus[0]}; "
            f"32-client and pipelined rows: server on CPU {self.cpus[0]}, clients on CPU "
            f"{self.cpus[1]}"
        )


class EchoServer:
    """A unix-socket echo server in its own process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EchoServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "xenvirtio.bench.xenstore_baseline", "--echo", self.path]
        )
        deadline = time.monotonic() + 15
        while not os.path.exists(self.path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("echo server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def measure(self, duration: float, clients: int, placement: Placement) -> list[Result]:
        assert self._proc is not None
        placement.shared(self._proc.pid)
        one = self._one(duration)
        placement.spread(self._proc.pid)
        try:
            return [
                one,
                asyncio.run(self._many(duration, clients, 1)),
                asyncio.run(self._many(duration, 1, 16)),
            ]
        finally:
            placement.restore()

    def _one(self, duration: float) -> Result:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        lat: list[int] = []
        clock = time.perf_counter_ns
        start = now = clock()
        end = start + int(duration * 1e9)
        with sock:
            while now < end:
                sock.sendall(MESSAGE)
                got = 0
                while got < len(MESSAGE):
                    got += len(sock.recv(65536))
                t = clock()
                lat.append(t - now)
                now = t
        return Result("round trip", 1, len(lat), (now - start) / 1e9, lat)

    async def _many(self, duration: float, clients: int, depth: int) -> Result:
        lat: list[int] = []
        end = time.perf_counter_ns() + int(duration * 1e9)

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
            n = 0
            clock = time.perf_counter_ns
            now = clock()
            while now < end:
                writer.write(MESSAGE * depth)
                await reader.readexactly(len(MESSAGE) * depth)
                t = clock()
                lat.extend([t - now] * depth)
                now = t
                n += depth
            return n

        conns = [await asyncio.open_unix_connection(self.path) for _ in range(clients)]
        start = time.perf_counter_ns()
        counts = await asyncio.gather(*(one(r, w) for r, w in conns))
        seconds = (time.perf_counter_ns() - start) / 1e9
        for _r, w in conns:
            w.close()
        name = "round trip" if depth == 1 else f"round trip, {depth} in flight"
        return Result(name, clients, sum(counts), seconds, lat)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _serve_echo(path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tmp = path + ".tmp"
    server = await loop.create_unix_server(_Echo, tmp)
    os.rename(tmp, path)
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def find_c_xenstored() -> str | None:
    """``$XENVIRTIO_C_XENSTORED``, else where Debian's xen-utils installs it."""
    override = os.environ.get("XENVIRTIO_C_XENSTORED")
    if override:
        return override if os.access(override, os.X_OK) else None
    for pattern in C_XENSTORED_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            if os.access(path, os.X_OK):
                return path
    return None


@contextlib.contextmanager
def c_xenstored(directory: str) -> Iterator[tuple[str | None, str, int]]:
    """Start Xen's C xenstored on a private socket: ``(socket, "", pid)`` or ``(None, why, 0)``."""
    binary = find_c_xenstored()
    if binary is None:
        yield (
            None,
            (
                "not installed (Debian ships it in xen-utils, and it only runs as a Xen dom0 "
                "daemon: it opens /dev/xen/privcmd at start)"
            ),
            0,
        )
        return
    rundir = os.path.join(directory, "c-xenstored")
    os.makedirs(rundir, exist_ok=True)
    env = dict(os.environ, XENSTORED_RUNDIR=rundir)
    proc = subprocess.Popen(
        [binary, "-N", "-F", os.path.join(rundir, "pid")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    path = os.path.join(rundir, "socket")
    try:
        found, why = _probe(proc, path, binary)
        yield found, why, proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _probe(proc: subprocess.Popen[bytes], path: str, binary: str) -> tuple[str | None, str]:
    deadline = time.monotonic() + 5
    while not os.path.exists(path) and proc.poll() is None:
        if time.monotonic() > deadline:
            return None, f"{binary} did not create its socket"
        time.sleep(0.05)
    try:
        with XenstoreClient.connect(path) as xs:
            xs.write("/bench/probe", b"1")
    except (OSError, ConnectionError) as exc:
        return None, _died(proc, binary) or f"{binary} failed a probe write: {exc}"
    return path, ""


def _died(proc: subprocess.Popen[bytes], binary: str) -> str:
    """Why ``proc`` exited (its status and last words), or "" if it is still running."""
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        return ""
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    last = err.splitlines()[-1] if err else "no message"
    return f"{binary} exited with status {proc.returncode} ({last})"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--echo":
    asyncio.run(_serve_echo(sys.argv[2]))
