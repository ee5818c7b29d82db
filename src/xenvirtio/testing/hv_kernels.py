"""Small domain kernels the hv tests run in domain processes (``func(guest, cmdline)``)."""

from __future__ import annotations

import json
import socket
import time

from xenvirtio.hv.api import Guest, HypervisorError


def exit_with(guest: Guest, cmdline: str) -> int:
    """End at once with exit code ``int(cmdline)``."""
    return int(cmdline)


def crash(guest: Guest, cmdline: str) -> int:
    raise RuntimeError("kernel panic: " + cmdline)


def spin(guest: Guest, cmdline: str) -> int:
    """Count forever into guest RAM page 0 (so a test can see it run and stop)."""
    view = guest.memory
    n = 0
    while True:
        n += 1
        view[0:8] = n.to_bytes(8, "little")
        time.sleep(0.001)


def knock_on_dom0(guest: Guest, cmdline: str) -> int:
    """Try the dom0 socket in run dir ``cmdline``: 0 if refused, 1 if it let us in."""
    from xenvirtio.hv.emu.client import Connection

    try:
        conn = Connection.connect(cmdline)
        conn.call("ping")
    except HypervisorError:
        return 0
    return 1


def leaky(guest: Guest, cmdline: str) -> int:
    """Take grants, ports and mappings, report them on socket ``cmdline``, never give
    them back, and wait to be destroyed."""
    hv = guest.hypervisor
    shared = hv.gntshr.share_pages(0, 2, True)
    shared[0:4] = guest.domid.to_bytes(4, "little")
    (frame,) = guest.alloc_pages(1)
    ref = guest.grant_table.grant_foreign_access(0, frame, readonly=True)
    port = hv.evtchn.bind_unbound_port(0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(cmdline)
        stream = sock.makefile("rwb")
        report = {"domid": guest.domid, "refs": list(shared.refs), "ref": ref, "port": port}
        stream.write(json.dumps(report).encode() + b"\n")
        stream.flush()
        dom0 = json.loads(stream.readline())
        mapping = hv.gnttab.map_grant_refs(0, dom0["refs"], True)
        mapping[0:1] = b"\x01"
        stream.write(b"mapped\n")
        stream.flush()
        stream.readline()  # blocks until the domain is destroyed
    return 0
