"""A domain's vCPU I/O on emu: accesses turned into ioreqs, and the hypervisor's own
ioreq broadcasts.

emu has no instruction emulator: a guest names the access it makes (what Xen's
``hvmemul_do_io`` builds from a trapped instruction) and this module does the rest of
Xen's job. It asks the daemon which enabled server claims the address (Xen's
``ioreq_server_select``), writes ``struct ioreq`` into the vCPU's slot of that server's
shared page, publishes ``STATE_IOREQ_READY`` last, kicks ``vp_eport`` and waits for
``STATE_IORESP_READY``. A rep (``count``, ``df``) with ``data_is_ptr`` leaves the data
in guest memory, where the device model reads or fills it. Unclaimed reads give all
ones (into the buffer, with ``data_is_ptr``); unclaimed writes vanish.

`EmuVcpuIo.broadcast` is ``ioreq_broadcast``: one ioreq (``IOREQ_TYPE_INVALIDATE``) to
every enabled server of the domain in turn, each answered before the next.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import select
import threading
import time
from typing import NamedTuple

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.emu.client import Connection
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.spec.ioreq import (
    IOREQ,
    IOREQ_READ,
    IOREQ_STATE_OFFSET,
    STATE_IOREQ_NONE,
    STATE_IOREQ_READY,
    STATE_IORESP_READY,
)

MAX_REPS = 4096  # what Xen's hvmemul clamps a rep to at most (one page of 1-byte items)


class Access(NamedTuple):
    """One ioreq as the vCPU issues it."""

    type: int
    addr: int
    size: int
    dir: int
    data: int
    reps: int = 1  # struct ioreq's count
    df: bool = False
    data_is_ptr: bool = False


class _ServerPages:
    """One ioreq server as a vCPU sees it: the shared page and each vCPU's eventfds."""

    def __init__(self, fds: list[int], vcpus: int) -> None:
        self.page = mmap.mmap(fds[0], 2 * XEN_PAGE_SIZE)
        os.close(fds[0])
        self.ports = [(fds[1 + 2 * v], fds[2 + 2 * v]) for v in range(vcpus)]

    def issue(self, vcpu: int, access: Access, deadline: float) -> int:
        base = XEN_PAGE_SIZE + vcpu * IOREQ.size
        inbound, outbound = self.ports[vcpu]
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(inbound)  # stale kicks
        a = access
        IOREQ.pack_into(
            self.page, base, a.addr, a.data, a.reps, a.size, self._vp_eport(base), 0, 0, a.type
        )
        bits = STATE_IOREQ_READY | a.data_is_ptr << 4 | a.dir << 5 | a.df << 6
        self.page[base + IOREQ_STATE_OFFSET] = bits  # published last
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(outbound, 1)
        while self.page[base + IOREQ_STATE_OFFSET] & 0xF != STATE_IORESP_READY:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HypervisorError(errno.ETIMEDOUT, "the device model did not answer the ioreq")
            if select.select([inbound], [], [], remaining)[0]:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(inbound)
        result = int.from_bytes(self.page[base + 8 : base + 16], "little")
        self.page[base + IOREQ_STATE_OFFSET] = STATE_IOREQ_NONE
        return result

    def _vp_eport(self, base: int) -> int:
        return int.from_bytes(self.page[base + 24 : base + 28], "little")

    def close(self) -> None:
        self.page.close()
        for inbound, outbound in self.ports:
            os.close(inbound)
            os.close(outbound)


class EmuVcpuIo:
    """A vCPU's MMIO / port / PCI config accesses (:class:`xenvirtio.hv.api.VcpuIo`)."""

    def __init__(self, conn: Connection, vcpus: int, memory: memoryview) -> None:
        self._conn = conn
        self._vcpus = vcpus
        self._memory = memory
        self._servers: dict[int, _ServerPages] = {}
        self._locks = [threading.Lock() for _ in range(vcpus)]
        self._cache_lock = threading.Lock()

    def access(
        self,
        type: int,
        addr: int,
        size: int,
        dir: int,
        data: int = 0,
        *,
        count: int = 1,
        df: bool = False,
        data_is_ptr: bool = False,
        vcpu: int = 0,
        timeout: float = 10.0,
    ) -> int:
        if size not in (1, 2, 4, 8) or dir not in (0, 1) or not 0 <= vcpu < self._vcpus:
            raise HypervisorError(errno.EINVAL, "bad ioreq size, direction or vCPU")
        if not 1 <= count <= MAX_REPS or (data_is_ptr and not self._in_ram(data, size, count, df)):
            raise HypervisorError(errno.EINVAL, "bad rep count or data buffer")
        mask = (1 << (size * 8)) - 1
        route = self._conn.call("ioreq.route", {"type": type, "addr": addr}).value
        server = self._server(route["token"], route["live"])
        if server is None:  # unclaimed: reads float high, writes vanish
            return self._unclaimed(size, dir, data, count, df, data_is_ptr)
        value = data if data_is_ptr else data & mask
        access = Access(type, addr, size, dir, value, count, df, data_is_ptr)
        result = self._issue(server, vcpu, access, timeout)
        return result & mask if dir == IOREQ_READ and not data_is_ptr else 0

    def _issue(self, server: _ServerPages, vcpu: int, access: Access, timeout: float) -> int:
        with self._locks[vcpu]:
            return server.issue(vcpu, access, time.monotonic() + timeout)

    def _in_ram(self, data: int, size: int, count: int, df: bool) -> bool:
        low = data - (count - 1) * size if df else data
        return low >= 0 and low + count * size <= len(self._memory)

    def _unclaimed(
        self, size: int, dir: int, data: int, count: int, df: bool, data_is_ptr: bool
    ) -> int:
        if dir != IOREQ_READ:
            return 0
        if not data_is_ptr:
            return (1 << (size * 8)) - 1
        low = data - (count - 1) * size if df else data
        self._memory[low : low + count * size] = b"\xff" * (count * size)
        return 0

    def broadcast(
        self, tokens: list[int], live: list[int], access: Access, *, vcpu: int, timeout: float
    ) -> None:
        """Xen's ``ioreq_broadcast``: ``access`` to each server in ``tokens`` in turn
        (``live``: every server of the domain, to drop pages of those gone)."""
        if not 0 <= vcpu < self._vcpus:
            raise HypervisorError(errno.EINVAL, f"no vCPU {vcpu}")
        for token in tokens:
            server = self._server(token, live)
            if server is not None:
                self._issue(server, vcpu, access, timeout)

    def _server(self, token: int | None, live: list[int]) -> _ServerPages | None:
        with self._cache_lock:
            for gone in set(self._servers) - set(live):
                self._servers.pop(gone).close()
            if token is None:
                return None
            if token not in self._servers:
                result = self._conn.call("ioreq.attach", {"token": token})
                self._servers[token] = _ServerPages(result.fds, int(result.value["vcpus"]))
            return self._servers[token]

    def close(self) -> None:
        with self._cache_lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()
