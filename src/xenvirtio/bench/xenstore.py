"""XenStore benchmark: our daemon under our clients, beside baselines measured in the same run.

Workloads, each for a fixed time: read, write, directory, transaction (start, read, write,
commit), watch-event delivery (a write on one connection until the event arrives on
another), with 1 client (blocking client) and 32 concurrent clients (asyncio, one
connection each), plus one connection pipelining 16 reads. Every figure is ops/s and
p50/p99 latency of a single operation.

Baselines: Xen's C xenstored when it runs on this machine (it needs a Xen dom0:
``/dev/xen/privcmd``; with ``-D`` it has no dom0 and crashes on the first socket request),
and always a raw unix-socket echo round trip of an XS_READ-sized message, the floor
any socket daemon sits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator

from xenvirtio.bench.xenstore_baseline import (
    TABLE_HEADER,
    EchoServer,
    Placement,
    Result,
    c_xenstored,
)
from xenvirtio.xenstore import aio
from xenvirtio.xenstore.client import Transaction, XenstoreClient

CONCURRENT = 32
PIPELINE = 16


# --- the daemon under test ----------------------------------------------------------


@contextlib.contextmanager
def our_daemon(directory: str) -> Iterator[tuple[str, int]]:
    """Run ``xenvirtio xenstored`` as its own process; yield its socket path and pid."""
    path = os.path.join(directory, "xenvirtio.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xenvirtio", "xenstored", "--socket", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_socket(path, proc)
        yield path, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_socket(path: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"daemon did not create {path} in {timeout}s")
        time.sleep(0.02)


# --- one client (blocking) ----------------------------------------------------------


def timed(name: str, duration: float, op: Callable[[int], object]) -> Result:
    """Call ``op(i)`` back to back for ``duration`` seconds, timing each call."""
    lat: list[int] = []
    clock = time.perf_counter_ns
    end = clock() + int(duration * 1e9)
    start = clock()
    i = 0
    now = start
    while now < end:
        op(i)
        t = clock()
        lat.append(t - now)
        now = t
        i += 1
    return Result(name, 1, i, (now - start) / 1e9, lat)


def single_client(path: str, duration: float) -> list[Result]:
    with XenstoreClient.connect(path) as xs, XenstoreClient.connect(path) as watcher:
        prepare(xs)

        def body(t: Transaction) -> None:
            t.write("/bench/tx", t.read("/bench/tx"))

        def transaction(i: int) -> None:
            xs.run_transaction(body)

        watcher.watch("/bench/watched", "w")
        next(watcher.watch_events(timeout=5))  # the initial event

        def watch_roundtrip(i: int) -> None:
            xs.write("/bench/watched", b"x")
            next(watcher.watch_events(timeout=5))

        return [
            timed("read", duration, lambda i: xs.read("/bench/key")),
            timed("write", duration, lambda i: xs.write("/bench/key", b"value")),
            timed("directory", duration, lambda i: xs.directory("/bench/dir")),
            timed("transaction", duration, transaction),
            timed("watch event", duration, watch_roundtrip),
        ]


def prepare(xs: XenstoreClient) -> None:
    xs.write("/bench/key", b"value")
    xs.write("/bench/tx", b"0")
    xs.write("/bench/watched", b"")
    for n in range(16):
        xs.write(f"/bench/dir/entry{n}", b"")


# --- many clients (asyncio) ---------------------------------------------------------

AsyncOp = Callable[["aio.XenstoreClient", int], Awaitable[object]]


async def _timed_task(client: aio.XenstoreClient, op: AsyncOp, end: int, lat: list[int]) -> int:
    clock = time.perf_counter_ns
    n = 0
    now = clock()
    while now < end:
        await op(client, n)
        t = clock()
        lat.append(t - now)
        now = t
        n += 1
    return n


async def concurrent(path: str, name: str, n: int, duration: float, op: AsyncOp) -> Result:
    """``n`` connections, each running ``op`` back to back for ``duration`` seconds."""
    clients = [await aio.XenstoreClient.connect(path) for _ in range(n)]
    try:
        lat: list[int] = []
        start = time.perf_counter_ns()
        end = start + int(duration * 1e9)
        counts = await asyncio.gather(*(_timed_task(c, op, end, lat) for c in clients))
        return Result(name, n, sum(counts), (time.perf_counter_ns() - start) / 1e9, lat)
    finally:
        for c in clients:
            await c.close()


async def _a_read(c: aio.XenstoreClient, i: int) -> None:
    await c.read("/bench/key")


async def _a_write(c: aio.XenstoreClient, i: int) -> None:
    await c.write(f"/bench/w/{id(c)}", b"value")


async def _a_directory(c: aio.XenstoreClient, i: int) -> None:
    await c.directory("/bench/dir")


async def _a_transaction(c: aio.XenstoreClient, i: int) -> None:
    async def body(t: aio.Transaction) -> None:
        await t.write(f"/bench/t/{id(c)}", await t.read("/bench/tx"))

    await c.run_transaction(body)


async def watch_pairs(path: str, n: int, duration: float) -> Result:
    """``n`` writer/watcher connection pairs; latency = write until its event arrives."""
    writers = [await aio.XenstoreClient.connect(path) for _ in range(n)]
    watchers = [await aio.XenstoreClient.connect(path) for _ in range(n)]
    try:
        lat: list[int] = []
        end = time.perf_counter_ns() + int(duration * 1e9)

        async def pair(k: int) -> int:
            node = f"/bench/pairs/{k}"
            await writers[k].write(node, b"")
            await watchers[k].watch(node, "t")
            events = watchers[k].watch_events(timeout=5)
            await anext(events)  # the initial event

            async def roundtrip(c: aio.XenstoreClient, i: int) -> None:
                await c.write(node, b"x")
                await anext(events)

            return await _timed_task(writers[k], roundtrip, end, lat)

        start = time.perf_counter_ns()
        counts = await asyncio.gather(*(pair(k) for k in range(n)))
        return Result("watch event", n, sum(counts), (time.perf_counter_ns() - start) / 1e9, lat)
    finally:
        for c in writers + watchers:
            await c.close()


async def pipelined(path: str, depth: int, duration: float) -> Result:
    """One connection with ``depth`` reads in flight at all times."""
    client = await aio.XenstoreClient.connect(path)
    try:
        lat: list[int] = []
        end = time.perf_counter_ns() + int(duration * 1e9)
        start = time.perf_counter_ns()
        tasks = (_timed_task(client, _a_read, end, lat) for _ in range(depth))
        counts = await asyncio.gather(*tasks)
        name = f"read, {depth} in flight"
        return Result(name, 1, sum(counts), (time.perf_counter_ns() - start) / 1e9, lat)
    finally:
        await client.close()


async def many_clients(path: str, duration: float) -> list[Result]:
    n = CONCURRENT
    return [
        await concurrent(path, "read", n, duration, _a_read),
        await concurrent(path, "write", n, duration, _a_write),
        await concurrent(path, "directory", n, duration, _a_directory),
        await concurrent(path, "transaction", n, duration, _a_transaction),
        await watch_pairs(path, n, duration),
        await pipelined(path, PIPELINE, duration),
    ]


def measure_daemon(path: str, pid: int, duration: float, placement: Placement) -> list[Result]:
    try:
        placement.shared(pid)
        alone = single_client(path, duration)
        placement.spread(pid)
        return alone + asyncio.run(many_clients(path, duration))
    finally:
        placement.restore()


# --- the whole run -------------------------------------------------------------------


def run(
    duration: float, emit: Callable[[str], None] = print, pin: bool = True
) -> dict[str, list[Result]]:
    """Measure everything and print it; returns the results by daemon name."""
    results: dict[str, list[Result]] = {}
    directory = tempfile.mkdtemp(prefix="xs-bench-")
    try:
        placement = Placement(pin)
        emit(f"xenstore benchmark: {duration:g} s per workload, python {sys.version.split()[0]}")
        emit(f"placement: {placement.describe()}")
        with our_daemon(directory) as (path, pid):
            results["xenvirtio xenstored"] = measure_daemon(path, pid, duration, placement)
        with c_xenstored(directory) as (c_path, why_not, c_pid):
            if c_path is not None:
                results["C xenstored"] = measure_daemon(c_path, c_pid, duration, placement)
            else:
                emit(f"baseline C xenstored: not measured: {why_not}")
        with EchoServer(os.path.join(directory, "echo.sock")) as echo:
            results["unix-socket echo (baseline)"] = echo.measure(duration, CONCURRENT, placement)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for name, rows in results.items():
        emit("")
        emit(f"== {name}")
        emit(TABLE_HEADER)
        for result in rows:
            emit(result.row())
    return results
