"""A domain that does what a test asks: the peer of the hypervisor conformance suites.

:class:`PeerAgent` runs named operations against a :class:`~xenvirtio.hv.api.Guest`
(its own event channels, shared pages, grant table, RAM, vCPU I/O, interrupts) and
answers in JSON-able values, or ``{"error": "EPERM", ...}``. The same agent serves

- in the test process, for a domain without a process (:class:`InProcessPeer`), and
- in a real domain process, as the kernel :func:`serve`, reached over a unix socket
  (:class:`ProcessPeer`): one JSON line per request and per answer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from xenvirtio.hv.api import (
    PROT_READ,
    PROT_WRITE,
    GrantMapping,
    Guest,
    SharedPages,
    UnmapNotify,
    hv_error,
    wait_pending,
)
from xenvirtio.spec.ioreq import HVM_IOREQSRV_BUFIOREQ_OFF


class PeerAgent:
    """Operations a test may ask of a domain; each returns JSON-able data."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.hv = guest.hypervisor
        self.shares: dict[int, SharedPages] = {}
        self.maps: dict[int, GrantMapping] = {}
        self._next = 1
        self.ops: dict[str, Callable[..., Any]] = {
            name[3:].replace("__", "."): getattr(self, name)
            for name in dir(self)
            if name.startswith("op_")
        }

    def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        func = self.ops.get(op)
        if func is None:
            return {"error": "ENOSYS", "msg": f"unknown peer op {op}"}
        try:
            return {"ok": func(**args)}
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, "EIO")
            return {"error": name, "msg": str(exc), "gntst": getattr(exc, "status", None)}

    def _id(self) -> int:
        self._next += 1
        return self._next

    def op_domid(self) -> int:
        return self.guest.domid

    # event channels
    def op_evtchn__bind_unbound_port(self, remote_domid: int) -> int:
        return self.hv.evtchn.bind_unbound_port(remote_domid)

    def op_evtchn__bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        return self.hv.evtchn.bind_interdomain(remote_domid, remote_port)

    def op_evtchn__notify(self, port: int) -> None:
        self.hv.evtchn.notify(port)

    def op_evtchn__wait(self, timeout: float) -> int | None:
        port = wait_pending(self.hv.evtchn, timeout)
        if port is not None:
            self.hv.evtchn.unmask(port)
        return port

    def op_evtchn__unbind(self, port: int) -> None:
        self.hv.evtchn.unbind(port)

    def op_evtchn__status(self, port: int) -> dict[str, Any]:
        return vars(self.hv.evtchn.status(port))

    def op_evtchn__echo(self, port: int, count: int, timeout: float) -> int:
        """Answer ``count`` events on ``port`` with one notify each (ping-pong)."""
        for n in range(count):
            got = wait_pending(self.hv.evtchn, timeout)
            if got is None:
                return n
            self.hv.evtchn.unmask(got)
            self.hv.evtchn.notify(port)
        return count

    # sharing pages (gntshr) and mapping grants (gnttab)
    def op_gntshr__share(
        self,
        domid: int,
        count: int,
        writable: bool,
        notify_offset: int | None = None,
        notify_port: int | None = None,
    ) -> dict[str, Any]:
        notify = UnmapNotify(notify_offset, notify_port) if notify_offset or notify_port else None
        pages = self.hv.gntshr.share_pages(domid, count, writable, notify=notify)
        handle = self._id()
        self.shares[handle] = pages
        return {"handle": handle, "refs": list(pages.refs)}

    def op_gntshr__unshare(self, handle: int) -> None:
        self.hv.gntshr.unshare(self.shares.pop(handle))

    def op_gnttab__map(self, domid: int, refs: list[int], writable: bool) -> int:
        handle = self._id()
        self.maps[handle] = self.hv.gnttab.map_grant_refs(domid, refs, writable)
        return handle

    def op_gnttab__unmap(self, handle: int) -> None:
        self.hv.gnttab.unmap(self.maps.pop(handle))

    def _view(self, kind: str, handle: int) -> memoryview:
        if kind == "share":
            return self.shares[handle].memory
        if kind == "map":
            return self.maps[handle].memory
        return self.guest.memory

    def op_read(self, kind: str, handle: int, offset: int, length: int) -> str:
        return bytes(self._view(kind, handle)[offset : offset + length]).hex()

    def op_write(self, kind: str, handle: int, offset: int, data: str) -> None:
        raw = bytes.fromhex(data)
        self._view(kind, handle)[offset : offset + len(raw)] = raw

    # the domain's own grant table and memory
    def op_grant__grant(self, domid: int, frame: int, readonly: bool) -> int:
        return self.guest.grant_table.grant_foreign_access(domid, frame, readonly)

    def op_grant__end(self, ref: int) -> None:
        self.guest.grant_table.end_foreign_access(ref)

    def op_grant__query(self, ref: int) -> bool:
        return self.guest.grant_table.query_foreign_access(ref)

    def op_mem__alloc(self, count: int) -> list[int]:
        return self.guest.alloc_pages(count)

    # privileged operations a domU must be refused
    def op_foreign__map(self, domid: int, frames: list[int]) -> None:
        self.hv.foreign.map(domid, PROT_READ | PROT_WRITE, frames).unmap()

    def op_dm__create_ioreq_server(self, domid: int) -> int:
        return self.hv.devicemodel.create_ioreq_server(domid, HVM_IOREQSRV_BUFIOREQ_OFF)

    def op_domctl__create(self) -> int:
        return self.hv.domctl.create(4, name="from-a-domu")

    # vCPU I/O and interrupts
    def op_vcpu__access(
        self, type: int, addr: int, size: int, dir: int, data: int = 0, vcpu: int = 0
    ) -> int:
        return self.guest.vcpu_io.access(type, addr, size, dir, data, vcpu=vcpu, timeout=10.0)

    def op_irq__take(self) -> list[dict[str, Any]]:
        return [vars(e) for e in self.guest.interrupts.take()]

    # XenStore through the domain's own ring
    def op_xs__read(self, path: str) -> str:
        assert self.hv.store is not None
        return self.hv.store.read(path).decode()

    def op_xs__write(self, path: str, value: str) -> None:
        assert self.hv.store is not None
        self.hv.store.write(path, value)


class Peer(Protocol):
    """A domain driven by a test: ``call`` waits, ``submit`` returns a future."""

    domid: int

    def call(self, op: str, **args: Any) -> Any: ...

    def submit(self, op: str, **args: Any) -> Future[Any]: ...

    def close(self) -> None: ...


def unwrap(answer: dict[str, Any]) -> Any:
    if "error" in answer:
        raise hv_error(answer["error"], answer.get("msg", ""), gntst=answer.get("gntst"))
    return answer["ok"]


class InProcessPeer:
    """The agent in this process, over a guest view of a process-less domain."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.agent = PeerAgent(guest)
        self.domid = guest.domid
        self._pool = ThreadPoolExecutor(max_workers=1)

    def call(self, op: str, **args: Any) -> Any:
        return unwrap(self.agent.handle(op, args))

    def submit(self, op: str, **args: Any) -> Future[Any]:
        return self._pool.submit(self.call, op, **args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.guest.close()


class ProcessPeer:
    """A domain process running :func:`serve`, connected back to us over ``sock``."""

    def __init__(self, domid: int, sock: socket.socket) -> None:
        self.domid = domid
        self._sock = sock
        self._file = sock.makefile("rwb")
        self._pool = ThreadPoolExecutor(max_workers=1)

    def _roundtrip(self, op: str, args: dict[str, Any]) -> Any:
        self._file.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise ConnectionError(f"domain {self.domid} went away")
        return unwrap(json.loads(line))

    def call(self, op: str, **args: Any) -> Any:
        return self._pool.submit(self._roundtrip, op, args).result()

    def submit(self, op: str, **args: Any) -> Future[Any]:
        return self._pool.submit(self._roundtrip, op, args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with contextlib.suppress(OSError):
            self._file.close()
            self._sock.close()


def serve(guest: Guest, cmdline: str) -> int:
    """Kernel: connect to the unix socket named by ``cmdline`` and run the agent."""
    agent = PeerAgent(guest)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(cmdline)
        stream = sock.makefile("rwb")
        stream.write(json.dumps({"domid": guest.domid}).encode() + b"\n")
        stream.flush()
        for line in stream:
            request = json.loads(line)
            answer = agent.handle(request["op"], request["args"])
            stream.write(json.dumps(answer).encode() + b"\n")
            stream.flush()
    return 0
