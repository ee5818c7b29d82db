"""Virtqueue throughput: chains per second through one queue, split and packed rings,
1- and 3-descriptor chains, in one process and across two processes.

- *one process*: the driver adds a batch, the device pops it and uses it all, the driver
  collects it; the pure cost of the ring code (the device does not touch the buffers).
  Best of three runs.
- *two processes, batched*: a forked device process shares the guest RAM (a memfd) and
  is kicked and interrupts through eventfds; the driver keeps the queue full, and both
  sides suppress notifications while they have work (enable before sleeping).
- *two processes, 1 in flight*: the driver waits for each chain before adding the next,
  so every chain costs a kick and an interrupt: bounded by the notification round trip.

The baseline, measured in the same run, is a bare eventfd ping-pong between two
processes: the most round trips per second two processes can do here.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xenvirtio.mem.flat import FlatMemory
from xenvirtio.spec import virtio as S
from xenvirtio.virtio.queue import (
    DeviceQueue,
    DriverQueue,
    QueueConfig,
    RingFormat,
    make_device_queue,
    make_driver_queue,
    ring_addrs,
)

MEM_SIZE = 1 << 20
DATA = 0x10000
REPEATS = 3  # one-process rows: best of this many (other processes share the CPUs)
WAIT_S = 30.0  # a side that hears nothing this long gives up (the other one died)
Segments = list[tuple[int, int]]


@dataclass(frozen=True)
class Result:
    scenario: str
    ring: str
    descs: int
    chains: int
    seconds: float
    notifications: int  # kicks + interrupts

    @property
    def rate(self) -> float:
        return self.chains / self.seconds

    def line(self) -> str:
        return (
            f"{self.scenario:<32} {self.ring:<7} {self.descs:>5} {self.rate:>12,.0f} "
            f"{1e6 / self.rate:>9.2f} {self.notifications / self.chains:>9.3f}"
        )


HEADER = (
    f"{'scenario':<32} {'ring':<7} {'descs':>5} {'chains/s':>12} {'us/chain':>9} {'notif/ch':>9}"
)


def _config(fmt: RingFormat, size: int) -> QueueConfig:
    packed = fmt is RingFormat.PACKED
    features = 1 << S.VIRTIO_F_VERSION_1 | (1 << S.VIRTIO_F_RING_PACKED if packed else 0)
    addrs = ring_addrs(packed, 0, size)
    return QueueConfig(size, addrs.desc, addrs.driver, addrs.device, features)


def _buffer(descs: int) -> tuple[Segments, Segments, int]:
    """A 1-descriptor chain is a 1500-byte packet (device-readable); a 3-descriptor chain
    is a block request: header and data readable, one status byte written back."""
    if descs == 1:
        return [(DATA, 1500)], [], 0
    return [(DATA, 16), (DATA + 64, 4096)], [(DATA + 8192, 1)], 1


def _pair(fmt: RingFormat, size: int, mem: FlatMemory) -> tuple[DriverQueue[int], DeviceQueue]:
    cfg = _config(fmt, size)
    drv = make_driver_queue(fmt, cfg)
    drv.init_rings(mem)
    return drv, make_device_queue(fmt, cfg)


# -- one process ------------------------------------------------------------------------------


def one_process(fmt: RingFormat, descs: int, chains: int, size: int) -> Result:
    """Driver and device over one FlatMemory: add a batch, pop, use, collect."""
    mem = FlatMemory(MEM_SIZE)
    drv, dev = _pair(fmt, size, mem)
    readable, writable, written = _buffer(descs)
    batch = size // descs
    done = 0
    started = time.perf_counter()
    while done < chains:
        for token in range(min(batch, chains - done)):
            drv.add(mem, readable, writable, token)
        drv.kick_prepare(mem)
        popped = dev.pop_batch(mem, batch)
        dev.push_used_batch(mem, [(chain, written) for chain in popped])
        dev.needs_notify(mem)
        done += len(drv.get_used_batch(mem, batch))
    return Result(
        f"one process, batches of {batch}", fmt.value, descs, chains,
        time.perf_counter() - started, 0,
    )  # fmt: skip


# -- two processes ----------------------------------------------------------------------------


def _wait(fd: int) -> int:
    """Block until the eventfd fires; returns its count (notifications coalesced)."""
    if not select.select([fd], [], [], WAIT_S)[0]:
        raise TimeoutError("the other process went silent")
    return os.eventfd_read(fd)


def _device(fmt: RingFormat, size: int, mm: mmap.mmap, kick: int, irq: int, chains: int) -> None:
    """The device process: use every chain as soon as it is popped (a status byte back
    when the chain has a writable part)."""
    mem = FlatMemory(buffer=mm)
    dev = make_device_queue(fmt, _config(fmt, size))
    served = 0
    while served < chains:
        popped = dev.pop_batch(mem, size)
        if not popped:
            if not dev.enable_notification(mem):  # re-check before sleeping
                _wait(kick)
            dev.disable_notification(mem)
            continue
        dev.push_used_batch(mem, [(chain, min(1, chain.writable_len)) for chain in popped])
        served += len(popped)
        if dev.needs_notify(mem):
            os.eventfd_write(irq, 1)


def _drive(
    drv: DriverQueue[int],
    mem: FlatMemory,
    descs: int,
    chains: int,
    fds: tuple[int, int],
    window: int,
) -> int:
    """Keep up to ``window`` chains in flight until ``chains`` came back; returns the
    notifications exchanged (kicks sent + interrupts received)."""
    kick, irq = fds
    readable, writable, _ = _buffer(descs)
    added = done = notifications = 0
    drv.disable_cb(mem)  # poll while work is outstanding; enable only before sleeping
    while done < chains:
        while added < chains and added - done < window and drv.num_free >= descs:
            drv.add(mem, readable, writable, added)
            added += 1
        if drv.kick_prepare(mem):
            os.eventfd_write(kick, 1)
            notifications += 1
        got = len(drv.get_used_batch(mem, window))
        done += got
        if got or drv.enable_cb(mem):
            drv.disable_cb(mem)
            continue
        notifications += _wait(irq)
        drv.disable_cb(mem)
    return notifications


def two_processes(fmt: RingFormat, descs: int, chains: int, size: int, window: int) -> Result:
    """The driver here, the device in a forked process sharing a memfd; eventfd kicks
    and interrupts. ``window`` chains at most in flight (1: no batching possible)."""
    memfd = os.memfd_create("xenvirtio-bench-ram", os.MFD_CLOEXEC)
    os.ftruncate(memfd, MEM_SIZE)
    mm = mmap.mmap(memfd, MEM_SIZE)
    kick, irq = os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)
    mem = FlatMemory(buffer=mm)
    drv, _ = _pair(fmt, size, mem)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _device(fmt, size, mm, kick, irq, chains)
            code = 0
        finally:
            os._exit(code)
    try:
        started = time.perf_counter()
        notifications = _drive(drv, mem, descs, chains, (kick, irq), window)
        seconds = time.perf_counter() - started
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("the device process failed")
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in (memfd, kick, irq):
            os.close(fd)
    scenario = "two processes, 1 in flight" if window == 1 else "two processes, batched"
    return Result(scenario, fmt.value, descs, chains, seconds, notifications)


def eventfd_ping_pong(rounds: int) -> float:
    """Baseline: round trips/s of two processes bouncing two eventfds, nothing else."""
    ping, pong = os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(rounds):
                _wait(ping)
                os.eventfd_write(pong, 1)
        finally:
            os._exit(0)
    try:
        started = time.perf_counter()
        for _ in range(rounds):
            os.eventfd_write(ping, 1)
            _wait(pong)
        return rounds / (time.perf_counter() - started)
    finally:
        os.waitpid(pid, 0)
        os.close(ping)
        os.close(pong)


# -- the whole run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    in_process: int  # chains per one-process row
    batched: int  # chains per batched two-process row
    in_flight: int  # chains per 1-in-flight row (and baseline round trips)
    size: int = 256

    @classmethod
    def quick(cls) -> Plan:
        return cls(20_000, 10_000, 1_000)

    @classmethod
    def full(cls) -> Plan:
        return cls(300_000, 100_000, 10_000)


def run(plan: Plan, emit: Callable[[str], object]) -> list[Result]:
    """Measure every row and print the table; returns the results."""
    one_process(RingFormat.SPLIT, 1, 2_000, plan.size)  # warm-up
    results: list[Result] = []
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    emit(f"virtqueue throughput, queue size {plan.size} (load average {load})")
    emit(HEADER)
    rows: Sequence[Callable[[RingFormat, int], Result]] = (
        lambda f, d: max(
            (one_process(f, d, plan.in_process, plan.size) for _ in range(REPEATS)),
            key=lambda r: r.rate,
        ),
        lambda f, d: two_processes(f, d, plan.batched, plan.size, plan.size),
        lambda f, d: two_processes(f, d, plan.in_flight, plan.size, 1),
    )
    for measure in rows:
        for fmt in RingFormat:
            for descs in (1, 3):
                result = measure(fmt, descs)
                results.append(result)
                emit(result.line())
    baseline = eventfd_ping_pong(plan.in_flight)
    emit(f"{'baseline: bare eventfd ping-pong':<32} {'-':<7} {'-':>5} {baseline:>12,.0f} "
         f"{1e6 / baseline:>9.2f} {2:>9.3f}")  # fmt: skip
    emit(_summary(results, baseline))
    return results


def _summary(results: list[Result], baseline: float) -> str:
    single = {r.ring: r.rate for r in results if r.scenario.startswith("one") and r.descs == 1}
    flight = [r.rate / baseline for r in results if r.scenario.endswith("1 in flight")]
    batched = [r.rate / baseline for r in results if r.scenario.endswith("batched")]
    rates = ", ".join(f"{ring} {rate:,.0f}/s" for ring, rate in single.items())
    return (
        f"one process, 1-descriptor chains: {rates} (target >= 300,000/s)\n"
        f"two processes, chains/s per eventfd round trip/s: "
        f"1 in flight {min(flight):.2f}-{max(flight):.2f}, "
        f"batched {min(batched):.1f}-{max(batched):.1f}"
    )
