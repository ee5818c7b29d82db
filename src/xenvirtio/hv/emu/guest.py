"""A domain's kernel side on emu: :class:`EmuGuest` and the boot of a domain process.

A domain process is forked by the zygote with a socket already connected to the
hypervisor as that domain. :func:`boot` waits for the first unpause, builds the
:class:`EmuGuest` and runs the kernel, a Python callable ``func(guest, cmdline)``; its
return value (or exception) becomes the domain's exit code (SCHEDOP_shutdown).

:func:`attach_guest` gives dom0 code the same view of a domain *without* a process
(tests drive a domain from the test process this way).
"""

from __future__ import annotations

import contextlib
import importlib
import mmap
import runpy
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xenvirtio.hv.api.guest import StartInfo
from xenvirtio.hv.api.hypervisor import Hypervisor
from xenvirtio.hv.emu.client import Connection
from xenvirtio.hv.emu.evtchn import EmuEvtchn
from xenvirtio.hv.emu.guest_ports import EmuGrantTableFront, EmuInterrupts
from xenvirtio.hv.emu.hypervisor import bundle
from xenvirtio.hv.emu.vcpu_io import Access, EmuVcpuIo
from xenvirtio.hv.emu.xenstore_link import EvtchnRingChannel
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.spec.ioreq import IOREQ_TYPE_INVALIDATE, IOREQ_WRITE
from xenvirtio.xenstore.client import XenstoreClient


class EmuGuest:
    """The hypervisor as domain ``domid``'s kernel sees it (:class:`xenvirtio.hv.api.Guest`)."""

    def __init__(self, conn: Connection, *, xenstore: bool = True) -> None:
        self._conn = conn
        result = conn.call("mem.start_info")
        value = result.value
        self.cmdline: str = value["cmdline"]
        self.start_info = StartInfo(
            domid=value["domid"],
            name=value["name"],
            type=value["type"],
            nr_pages=value["nr_pages"],
            vcpus=value["vcpus"],
            store_gfn=value["store_gfn"],
            store_evtchn=value["store_evtchn"],
        )
        try:
            self._ram = mmap.mmap(result.fds[0], self.start_info.nr_pages * XEN_PAGE_SIZE)
        finally:
            result.close_fds()
        self.memory = memoryview(self._ram)
        self.grant_table = EmuGrantTableFront(conn)
        self.vcpu_io = EmuVcpuIo(conn, self.start_info.vcpus, self.memory)
        self.interrupts = EmuInterrupts(conn)
        store = None
        if xenstore and self.start_info.store_gfn is not None:
            store = XenstoreClient.over_ring(self.store_channel())
        self.hypervisor: Hypervisor = bundle(conn.open_another(), self.domid, store)

    @property
    def domid(self) -> int:
        return self.start_info.domid

    def alloc_pages(self, count: int) -> list[int]:
        return [int(g) for g in self._conn.call("mem.alloc_pages", {"count": count}).value["gfns"]]

    def free_pages(self, gfns: Sequence[int]) -> None:
        self._conn.call("mem.free_pages", {"gfns": list(gfns)})

    def decrease_reservation(
        self, gfns: Sequence[int], *, vcpu: int = 0, timeout: float = 10.0
    ) -> None:
        """``XENMEM_decrease_reservation``, then (as Xen does on the way back to the
        guest) ``IOREQ_TYPE_INVALIDATE`` to every enabled ioreq server of this domain,
        from ``vcpu``, each answered before the call returns."""
        value = self._conn.call("mem.decrease_reservation", {"gfns": list(gfns)}).value
        invalidate = Access(IOREQ_TYPE_INVALIDATE, 0, 4, IOREQ_WRITE, (1 << 64) - 1)
        self.vcpu_io.broadcast(
            value["servers"], value["live"], invalidate, vcpu=vcpu, timeout=timeout
        )

    def page(self, gfn: int) -> memoryview:
        """One page of this domain's RAM."""
        return self.memory[gfn * XEN_PAGE_SIZE : (gfn + 1) * XEN_PAGE_SIZE]

    def store_channel(self) -> EvtchnRingChannel:
        gfn, port = self.start_info.store_gfn, self.start_info.store_evtchn
        if gfn is None or port is None:
            raise OSError("this domain has no XenStore ring")
        evtchn = EmuEvtchn(self._conn.open_another())
        evtchn.claim(port)
        return EvtchnRingChannel(self.page(gfn), None, evtchn, port)

    def close(self) -> None:
        self.hypervisor.close()
        self.vcpu_io.close()
        self.interrupts.close()
        self.grant_table.close()
        self.memory.release()
        with contextlib.suppress(BufferError):  # a view still alive keeps the mapping
            self._ram.close()
        self._conn.close()


def attach_guest(run_dir: str | Path, domid: int, *, xenstore: bool = True) -> EmuGuest:
    """Domain ``domid``'s kernel view, from a dom0 process (the domain needs no process)."""
    dom0 = Connection.connect(run_dir)
    try:
        result = dom0.call("attach", {"domid": domid})
    finally:
        dom0.close()
    return EmuGuest(Connection.from_fd(result.fds[0]), xenstore=xenstore)


_current: EmuGuest | None = None


def current_guest() -> EmuGuest:
    """The running domain's guest view, for a kernel given as a module (``-m`` style)."""
    if _current is None:
        raise RuntimeError("not running as an emu domain kernel")
    return _current


def _run_module(module: str) -> Callable[..., Any]:
    def run(guest: EmuGuest, cmdline: str) -> int:
        global _current
        _current = guest
        sys.argv = [module, *cmdline.split()]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0

    return run


def resolve_kernel(kernel: str) -> Callable[..., Any]:
    """``package.module:function`` -> that function; ``package.module`` -> run the module
    as ``__main__`` with ``sys.argv[1:]`` = the command line."""
    if ":" not in kernel:
        return _run_module(kernel)
    module_name, _, qualname = kernel.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"kernel {kernel} is not callable")
    return target  # type: ignore[no-any-return]


def boot(fd: int, kernel: str) -> int:
    """Run a domain process's kernel; returns its exit code."""
    conn = Connection.from_fd(fd)
    try:
        conn.call("sched.wait_start")
        guest = EmuGuest(conn)
    except OSError:
        return 2
    try:
        result = resolve_kernel(kernel)(guest, guest.cmdline)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        conn.call("sched.shutdown", {"code": code})
        guest.close()
    except OSError:
        pass
    return code
