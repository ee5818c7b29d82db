"""A guest for the virtio-over-XenBus tests: an echo driver, and a domain kernel that runs
it on request.

`EchoDriver` drives `xenvirtio.testing.echo_device.EchoDevice` through any transport
with a DMA port (``.dma``): it probes, lays its queue out in DMA memory, echoes payloads
and, when the device shows DEVICE_NEEDS_RESET (a backend restart, a refused connection),
resets, probes again and resubmits what was in flight, as a real driver recovers.

`serve` is a domain kernel (``func(guest, cmdline)``): it connects to the unix socket
named by ``cmdline`` and runs one JSON request per line against an `EchoDriver` over a
`XenbusVirtioFrontend` of its own domain, answering one JSON line each.
"""

from __future__ import annotations

import json
import socket
import time
import traceback
from typing import Any, Protocol

from xenvirtio.hv.api import Guest
from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.testing.xenbus_guest_blk import BlkOps
from xenvirtio.transport.api import InterruptFlags, VirtioTransport
from xenvirtio.transport.dma import DmaBuffer, DmaPool
from xenvirtio.transport.probe import attach_queue, kick, probe, read_config_consistent
from xenvirtio.transport.xenbus.frontend import XenbusVirtioFrontend
from xenvirtio.transport.xenbus.runner import BackendRunner
from xenvirtio.virtio.queue import DriverQueue, QueueFullError, ring_addrs

BASE_FEATURES = 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_RING_F_EVENT_IDX


class WaitingTransport(VirtioTransport, Protocol):
    def wait(self, timeout: float | None = None) -> InterruptFlags: ...


class EchoDriver:
    """One queue of echo requests; outstanding payloads survive a device reset."""

    def __init__(
        self, transport: WaitingTransport, *, packed: bool = False, queue_size: int = 64
    ) -> None:
        self.t = transport
        self.wanted = BASE_FEATURES | (1 << S.VIRTIO_F_RING_PACKED if packed else 0)
        self.queue_size = queue_size
        self.queue: DriverQueue[int] | None = None
        self.features = 0
        self.outstanding: dict[int, bytes] = {}  # id -> payload, until echoed
        self.buffers: dict[int, tuple[DmaBuffer, DmaBuffer]] = {}  # id -> (in, out)
        self.results: dict[int, bytes] = {}
        self.unqueued: set[int] = set()  # outstanding, waiting for ring space
        self.recoveries = 0
        self.config_interrupts = 0
        self.ring: DmaBuffer | None = None
        self._next = 0
        self.pool = DmaPool.for_transport(transport)
        self.mem = transport.dma.memory

    def start(self) -> int:
        self.features = probe(self.t, self.wanted, self._setup)
        return self.features

    def _setup(self, features: int) -> None:
        packed = bool(features >> S.VIRTIO_F_RING_PACKED & 1)
        size = min(self.queue_size, self.t.queue_max_size(0))
        span = ring_addrs(packed, 0, size).end
        self.ring = self.pool.alloc(span, 4096)
        self.queue = attach_queue(self.t, self.mem, 0, features, self.ring.addr, size)

    def submit(self, payload: bytes) -> int:
        ident = self._next
        self._next += 1
        self.outstanding[ident] = payload
        self._add(ident)
        return ident

    def _add(self, ident: int) -> bool:
        """Put one outstanding payload on the ring; buffers exist only while it is."""
        assert self.queue is not None
        payload = self.outstanding[ident]
        if ident not in self.buffers:
            if self.queue.num_free < 2:
                self.unqueued.add(ident)
                return False
            n = max(len(payload), 1)
            src, dst = self.pool.alloc(n, 16), self.pool.alloc(n, 16)
            self.mem.write(src.addr, payload)
            self.buffers[ident] = (src, dst)
        src, dst = self.buffers[ident]
        try:
            self.queue.add(self.mem, [(src.addr, len(payload))], [(dst.addr, len(payload))], ident)
        except QueueFullError:
            self.unqueued.add(ident)
            return False
        self.unqueued.discard(ident)
        kick(self.t, self.queue, self.mem)
        return True

    def _harvest(self) -> None:
        assert self.queue is not None
        for ident, written in self.queue.get_used_batch(self.mem, self.queue.config.size):
            src, dst = self.buffers.pop(ident)
            self.results[ident] = self.mem.read(dst.addr, written)
            del self.outstanding[ident]
            self.pool.free(src)
            self.pool.free(dst)

    def recover(self) -> None:
        """DEVICE_NEEDS_RESET: reset, probe again, resubmit every outstanding payload."""
        self.recoveries += 1
        if self.ring is not None:
            self.pool.free(self.ring)
            self.ring = None
        self.start()
        self.unqueued = set(self.outstanding)
        for ident in sorted(self.outstanding):
            if not self._add(ident):
                break

    def run(self, timeout: float) -> None:
        """Serve interrupts until nothing is outstanding (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.outstanding and time.monotonic() < deadline:
            flags = self.t.wait(min(0.2, max(deadline - time.monotonic(), 0)))
            if flags & InterruptFlags.CONFIG:
                self.config_interrupts += 1
            if self.t.get_status() & DeviceStatus.DEVICE_NEEDS_RESET:
                self.recover()
                continue
            self._harvest()
            for ident in sorted(self.unqueued):
                if not self._add(ident):
                    break
        if self.outstanding:
            raise TimeoutError(f"{len(self.outstanding)} echo requests unanswered")

    def echo(self, payloads: list[bytes], timeout: float = 10.0) -> list[bytes]:
        ids = [self.submit(p) for p in payloads]
        self.run(timeout)
        return [self.results.pop(i) for i in ids]


class GuestAgent(BlkOps):
    """The requests `serve` answers (``op_<name>``; virtio-blk ones from `BlkOps`)."""

    def __init__(self, guest: Guest) -> None:
        super().__init__()
        self.guest = guest
        self.transport: XenbusVirtioFrontend | None = None
        self.driver: EchoDriver | None = None
        self.runners: list[BackendRunner] = []

    def op_attach(self, devid: int, packed: bool = False, dma_pages: int = 64) -> int:
        """Probe the device; returns the negotiated features (transport bits included)."""
        self.transport = XenbusVirtioFrontend(self.guest, devid, dma_pages=dma_pages)
        self.driver = EchoDriver(self.transport, packed=packed)
        self.driver.start()
        return self.transport.negotiated

    def _driver(self) -> EchoDriver:
        if self.driver is None:
            raise RuntimeError("attach first")
        return self.driver

    def op_echo(self, payloads: list[str], timeout: float = 10.0) -> list[str]:
        data = self._driver().echo([bytes.fromhex(p) for p in payloads], timeout)
        return [d.hex() for d in data]

    def op_submit(self, payloads: list[str]) -> list[int]:
        return [self._driver().submit(bytes.fromhex(p)) for p in payloads]

    def op_collect(self, timeout: float = 10.0) -> dict[str, Any]:
        driver = self._driver()
        driver.run(timeout)
        results = {str(k): v.hex() for k, v in sorted(driver.results.items())}
        driver.results.clear()
        return {"results": results, "recoveries": driver.recoveries}

    def op_status(self) -> int:
        assert self.transport is not None
        return self.transport.get_status()

    def op_config(self, offset: int, size: int) -> dict[str, Any]:
        assert self.transport is not None
        data = read_config_consistent(self.transport, offset, size)
        return {"data": data.hex(), "generation": self.transport.config_generation}

    def op_wait_config(self, timeout: float) -> bool:
        assert self.transport is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.transport.wait(0.1) & InterruptFlags.CONFIG:
                return True
        return False

    def op_write_config(self, offset: int, data: str) -> None:
        assert self.transport is not None
        self.transport.write_config(offset, bytes.fromhex(data))

    def op_serve_backend(self, nodename: str, grant_usage: bool = True) -> None:
        """Be a driver domain: serve an echo device at ``nodename`` from this domain."""
        runner = BackendRunner(self.guest.hypervisor)
        runner.start_thread(0.02)
        self.runners.append(runner)
        runner.add(nodename, EchoDevice(), grant_usage=grant_usage)

    def op_backend_state(self, nodename: str) -> dict[str, Any]:
        for runner in self.runners:
            backend = runner.backends.get(nodename)
            if backend is not None:
                return {"state": int(backend.state), "connected": backend.link is not None}
        return {"state": 0, "connected": False}

    def op_close(self) -> None:
        self.blk_close()
        if self.transport is not None:
            self.transport.close()
            self.transport = self.driver = None

    def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        func = getattr(self, f"op_{op}", None)
        if func is None:
            return {"error": f"unknown op {op}"}
        try:
            return {"ok": func(**args)}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}


def serve(guest: Guest, cmdline: str) -> int:
    """Kernel: answer requests from the unix socket ``cmdline`` until it closes."""
    agent = GuestAgent(guest)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(cmdline)
        stream = sock.makefile("rwb")
        stream.write(json.dumps({"domid": guest.domid}).encode() + b"\n")
        stream.flush()
        for line in stream:
            request = json.loads(line)
            answer = agent.handle(request["op"], request.get("args", {}))
            stream.write(json.dumps(answer).encode() + b"\n")
            stream.flush()
    agent.op_close()
    for runner in agent.runners:
        runner.close()
    return 0
