"""libxenevtchn on emu: ports are eventfds, the handle's ``fd()`` is an epoll over them.

``notify`` writes the peer's eventfd directly (no hypervisor hop). ``pending`` reads a
ready port's eventfd (coalescing events, like Xen's pending bit) and masks the port.
Masking is lazy: only if an event arrives while the port is masked is its eventfd taken
out of the epoll set ("parked"), the event staying counted in the eventfd until
``unmask`` puts it back. The usual pending/unmask pair costs no system call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from collections import deque

from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.api.evtchn import EvtchnStatus
from xenvirtio.hv.emu.client import Connection, Result


class EmuEvtchn:
    """A libxenevtchn handle (:class:`xenvirtio.hv.api.Evtchn`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._epoll = select.epoll(flags=select.EPOLL_CLOEXEC)
        self._ports: dict[int, tuple[int, int | None]] = {}  # port -> (inbound, outbound)
        self._by_fd: dict[int, int] = {}
        self._ready: deque[int] = deque()
        self._masked: set[int] = set()
        self._parked: set[int] = set()
        self._lock = threading.Lock()

    def fd(self) -> int:
        return self._epoll.fileno()

    def _add(self, result: Result) -> int:
        port = int(result.value["port"])
        inbound = result.fds[0]
        outbound = result.fds[1] if len(result.fds) > 1 else None
        with self._lock:
            self._ports[port] = (inbound, outbound)
            self._by_fd[inbound] = port
            self._epoll.register(inbound, select.EPOLLIN)
        return port

    def bind_unbound_port(self, remote_domid: int) -> int:
        return self._add(
            self._conn.call("evtchn.bind_unbound_port", {"remote_domid": remote_domid})
        )

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        args = {"remote_domid": remote_domid, "remote_port": remote_port}
        return self._add(self._conn.call("evtchn.bind_interdomain", args))

    def bind_virq(self, virq: int) -> int:
        return self._add(self._conn.call("evtchn.bind_virq", {"virq": virq}))

    def bind_pirq(self, pirq: int) -> int:
        return self._add(self._conn.call("evtchn.bind_pirq", {"pirq": pirq}))

    def claim(self, port: int) -> int:
        """Take over a port the hypervisor made for this domain (emu's kernel ports)."""
        return self._add(self._conn.call("evtchn.claim", {"port": port}))

    def notify(self, port: int) -> None:
        fds = self._ports.get(port)
        if fds is None:
            raise HypervisorError(errno.ENOTCONN, f"port {port} is not bound by this handle")
        if fds[1] is None:
            raise HypervisorError(errno.EINVAL, f"port {port} is a VIRQ or pirq: not notifiable")
        with contextlib.suppress(BlockingIOError):  # counter full: already pending
            os.eventfd_write(fds[1], 1)

    def unbind(self, port: int) -> None:
        if port not in self._ports:
            raise HypervisorError(errno.ENOTCONN, f"port {port} is not bound by this handle")
        self._conn.call("evtchn.unbind", {"port": port})
        self._forget(port)

    def _forget(self, port: int) -> None:
        with self._lock:
            inbound, outbound = self._ports.pop(port)
            del self._by_fd[inbound]
            self._masked.discard(port)
            self._parked.discard(port)
            with contextlib.suppress(ValueError):
                self._ready.remove(port)
            self._epoll.unregister(inbound)
        os.close(inbound)
        if outbound is not None:
            os.close(outbound)

    def pending(self) -> int | None:
        with self._lock:
            if not self._ready:
                for fd, _events in self._epoll.poll(0):
                    port = self._by_fd[fd]
                    if port in self._masked:  # latched until unmask()
                        self._epoll.modify(fd, 0)
                        self._parked.add(port)
                        continue
                    try:
                        os.eventfd_read(fd)
                    except BlockingIOError:
                        continue
                    self._masked.add(port)
                    self._ready.append(port)
            return self._ready.popleft() if self._ready else None

    def unmask(self, port: int) -> None:
        with self._lock:
            fds = self._ports.get(port)
            if fds is None:
                raise HypervisorError(errno.ENOTCONN, f"port {port} is not bound by this handle")
            self._masked.discard(port)
            if port in self._parked:
                self._parked.discard(port)
                self._epoll.modify(fds[0], select.EPOLLIN)

    def status(self, port: int) -> EvtchnStatus:
        value = self._conn.call("evtchn.status", {"port": port}).value
        return EvtchnStatus(
            state=value["state"],
            remote_domid=value["remote_domid"],
            remote_port=value["remote_port"],
            virq=value["virq"],
        )

    def ports(self) -> list[int]:
        return sorted(self._ports)

    def close(self) -> None:
        self._conn.close()  # the hypervisor unbinds everything this handle bound
        for port in list(self._ports):
            self._forget(port)
        self._epoll.close()
