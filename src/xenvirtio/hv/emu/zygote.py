"""The zygote: a process forked from the daemon at start-up that forks domain processes.

Forking a ready interpreter (the guest runtime already imported) makes a domain cost a
``fork`` instead of a Python start-up. Domain processes are reaped by the kernel
(``SIGCHLD`` ignored) and die with the zygote (``PR_SET_PDEATHSIG``), which dies with
the daemon, so no domain outlives its hypervisor. The daemon watches each domain
process through a pidfd.

Protocol on the zygote's socket (SOCK_SEQPACKET): the daemon sends a JSON spawn request
``{"domid", "kernel"}`` with the domain's connected socket as SCM_RIGHTS; the zygote
answers ``{"pid": ...}``.
"""

from __future__ import annotations

import array
import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def recv_fds(sock: socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    data, ancdata, _flags, _addr = sock.recvmsg(size, socket.CMSG_SPACE(max_fds * 4))
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
    return data, fds


def _child(sock: socket.socket, request: dict[str, Any], boot_fd: int) -> None:
    sock.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setpgid(0, 0)
    die_with_parent()
    from xenvirtio.hv.emu.guest import boot

    code = boot(boot_fd, str(request["kernel"]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(sock: socket.socket) -> None:
    """The zygote's loop; returns (and the process exits) when the daemon goes away."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    import xenvirtio.hv.emu.guest  # noqa: F401

    while True:
        try:
            data, fds = recv_fds(sock, 65536, 4)
        except OSError:
            return
        if not data:
            return
        request = json.loads(data)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": "expected one socket"}).encode())
            continue
        pid = os.fork()
        if pid == 0:
            try:
                _child(sock, request, fds[0])
            finally:
                os._exit(127)
        os.close(fds[0])
        sock.send(json.dumps({"pid": pid}).encode())


def start_zygote() -> tuple[int, socket.socket]:
    """Fork the zygote from the calling (not yet busy) process: (pid, our socket)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return pid, ours
