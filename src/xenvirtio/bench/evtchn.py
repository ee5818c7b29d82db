"""Event channel round trips between dom0 and a domain process, beside bare eventfds.

The emu path: dom0 notifies a port (one eventfd write), the domain's kernel wakes on its
handle's epoll fd, takes the port with ``pending``, unmasks it and notifies back; dom0
does the same. The baseline, measured in the same run, is the least two processes can
do: a blocking eventfd ping-pong with no event channel bookkeeping at all.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xenvirtio.hv.api import Evtchn, Guest, Hypervisor
from xenvirtio.hv.emu.host import host_status, start_host, stop_host
from xenvirtio.runtime import open_hypervisor

WARMUP = 200


@dataclass(frozen=True)
class Figures:
    name: str
    samples_ns: list[int]
    elapsed_s: float

    @property
    def rate(self) -> float:
        return len(self.samples_ns) / self.elapsed_s

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    def line(self) -> str:
        return (
            f"{self.name:<44} p50 {self.pct(0.5):7.1f} us  p99 {self.pct(0.99):7.1f} us  "
            f"mean {statistics.fmean(self.samples_ns) / 1000:7.1f} us  "
            f"{self.rate:9.0f} round trips/s  {2 * self.rate:9.0f} events/s"
        )


def _wait(evtchn: Evtchn) -> int:
    while True:
        port = evtchn.pending()
        if port is not None:
            evtchn.unmask(port)
            return port
        select.select([evtchn.fd()], [], [])


def pong(guest: Guest, cmdline: str) -> int:
    """Kernel: bind to the dom0 port named in XenStore and answer every event with one."""
    store = guest.hypervisor.store
    assert store is not None
    remote = int(store.read(f"/local/domain/{guest.domid}/data/{cmdline}"))
    evtchn = guest.hypervisor.evtchn
    port = evtchn.bind_interdomain(0, remote)
    evtchn.notify(port)  # ready
    while True:
        _wait(evtchn)
        evtchn.notify(port)


class Sampler:
    """Times round trips of one kind; :func:`interleave` feeds it in chunks."""

    def __init__(self, name: str, round_trip: Callable[[], None]) -> None:
        self.name = name
        self.round_trip = round_trip
        self.samples: list[int] = []
        self.elapsed_ns = 0

    def chunk(self, rounds: int) -> None:
        clock, round_trip, samples = time.perf_counter_ns, self.round_trip, self.samples
        started = clock()
        for _ in range(rounds):
            t0 = clock()
            round_trip()
            samples.append(clock() - t0)
        self.elapsed_ns += clock() - started

    def figures(self) -> Figures:
        return Figures(self.name, self.samples, self.elapsed_ns / 1e9)


def interleave(samplers: list[Sampler], rounds: int, chunks: int = 10) -> list[Figures]:
    """Warm up, then alternate chunks so every kind sees the same machine load."""
    for sampler in samplers:
        for _ in range(WARMUP):
            sampler.round_trip()
    for n in range(chunks):
        size = rounds // chunks + (1 if n < rounds % chunks else 0)
        for sampler in samplers:
            sampler.chunk(size)
    return [sampler.figures() for sampler in samplers]


@contextlib.contextmanager
def evtchn_pair(hv: Hypervisor) -> Iterator[Callable[[], None]]:
    """A round trip dom0 <-> a domain process running :func:`pong`."""
    assert hv.store is not None, "the emu host runs without XenStore"
    domid = hv.domctl.create(8, name=f"bench-evtchn-{os.getpid()}", kernel=pong, cmdline="port")
    evtchn = hv.open_evtchn()
    try:
        local = evtchn.bind_unbound_port(domid)
        hv.store.write(f"/local/domain/{domid}/data/port", str(local))
        hv.domctl.unpause(domid)
        _wait(evtchn)  # the domain is bound and listening

        def round_trip() -> None:
            evtchn.notify(local)
            _wait(evtchn)

        yield round_trip
    finally:
        evtchn.close()
        hv.domctl.destroy(domid)


@contextlib.contextmanager
def eventfd_pair() -> Iterator[Callable[[], None]]:
    """Baseline: two processes, two eventfds, blocking reads, nothing else."""
    ping = os.eventfd(0)
    pong_fd = os.eventfd(0)
    child = os.fork()
    if child == 0:
        try:
            while True:
                os.eventfd_read(ping)
                os.eventfd_write(pong_fd, 1)
        finally:
            os._exit(0)
    try:

        def round_trip() -> None:
            os.eventfd_write(ping, 1)
            os.eventfd_read(pong_fd)

        yield round_trip
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(ping)
        os.close(pong_fd)


@contextlib.contextmanager
def emu_host(run_dir: Path | None) -> Iterator[Hypervisor]:
    """dom0 of the host running in ``run_dir``, or of a private host made for the run."""
    private = run_dir is None or host_status(run_dir).hv_pid is None
    directory = Path(tempfile.mkdtemp(prefix="xv-bench-")) if run_dir is None else run_dir
    if private:
        start_host(directory)
    try:
        with open_hypervisor(run_dir=directory) as hv:
            yield hv
    finally:
        if private:
            stop_host(directory)
        if run_dir is None:
            shutil.rmtree(directory, ignore_errors=True)


def run(
    rounds: int, run_dir: Path | None, emit: Callable[[str], object]
) -> tuple[Figures, Figures]:
    """Measure both, interleaved, and print them."""
    with emu_host(run_dir) as hv, evtchn_pair(hv) as emu_trip, eventfd_pair() as bare_trip:
        emu, bare = interleave(
            [
                Sampler("evtchn, dom0 <-> domain process (emu)", emu_trip),
                Sampler("bare eventfd ping-pong, two processes", bare_trip),
            ],
            rounds,
        )
    emit(f"event channel round trips ({rounds} each, interleaved in 10 chunks, {WARMUP} warm-up)")
    emit(emu.line())
    emit(bare.line())
    emit(f"{'emu / baseline':<44} p50 {emu.pct(0.5) / bare.pct(0.5):7.2f} x")
    return emu, bare
