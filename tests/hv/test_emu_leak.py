"""Create and destroy 1,000 domains that each leave grants, ports and mappings open.

Each domain is a real process (forked by the zygote) running the ``leaky`` kernel: it
shares pages with dom0, grants a frame, binds a port and maps a page dom0 shared with
it, then waits to be destroyed without giving anything back. dom0 maps the domain's
grants, binds its port and maps a frame by foreign mapping, and cleans its own side only
after the domain is gone. Afterwards nothing may be left: descriptors (daemon, XenStore
daemon, this process), memory, processes, hypervisor objects and XenStore nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from xenvirtio.hv.api import PROT_READ, Hypervisor
from xenvirtio.hv.emu.host import HostStatus, host_status
from xenvirtio.runtime import open_hypervisor
from xenvirtio.spec.event_channel import EVTCHNSTAT_unbound
from xenvirtio.testing.hv_kernels import leaky

DOMAINS = 1000
WARMUP = 20


def fds(pid: int) -> list[str]:
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def snapshot(hv: Hypervisor, host: HostStatus) -> dict[str, Any]:
    status = host_status(host.run_dir).details
    time.sleep(0.2)  # let the daemon see the status connection close before counting
    assert hv.store is not None
    return {
        "hv_fds": len(fds(host.hv_pid or 0)),
        "hv_domain_memfds": sum(
            "memfd:dom" in f and "dom0-" not in f for f in fds(host.hv_pid or 0)
        ),
        "xs_fds": len(fds(host.xenstored_pid or 0)),
        "test_fds": len(fds(os.getpid())),
        "test_memfds": sum("memfd:" in f for f in fds(os.getpid())),
        "hv_rss_kb": rss_kb(host.hv_pid or 0),
        "xs_rss_kb": rss_kb(host.xenstored_pid or 0),
        "domain_processes": len(children(host.zygote_pid or 0)),
        "domains": len(status["domains"]),
        "connections": status["connections"],
        "ports": status["ports"],
        "xenstore_domains": hv.store.directory("/local/domain"),
    }


def cycle(hv: Hypervisor, listener: socket.socket, path: str, n: int) -> None:
    domid = hv.domctl.create(4, name=f"leak-{n}", kernel=leaky, cmdline=path)
    hv.domctl.unpause(domid)
    sock, _ = listener.accept()
    stream = sock.makefile("rwb")
    report = json.loads(stream.readline())
    assert report["domid"] == domid
    mapped = hv.gnttab.map_grant_refs(domid, report["refs"], True)
    assert mapped[0:4] == domid.to_bytes(4, "little")
    granted = hv.gnttab.map_grant_ref(domid, report["ref"], False)
    port = hv.evtchn.bind_interdomain(domid, report["port"])
    foreign = hv.foreign.map(domid, PROT_READ, [0, 1])
    shared = hv.gntshr.share_pages(domid, 1, True)
    stream.write(json.dumps({"refs": list(shared.refs)}).encode() + b"\n")
    stream.flush()
    assert stream.readline() == b"mapped\n"
    assert shared[0:1] == b"\x01"
    hv.domctl.destroy(domid)
    # dom0's side outlives the domain, as on Xen, until dom0 lets go.
    assert hv.evtchn.status(port).state == EVTCHNSTAT_unbound
    for mapping in (mapped, granted, foreign):
        mapping.unmap()
    hv.evtchn.unbind(port)
    hv.gntshr.unshare(shared)
    stream.close()
    sock.close()


@pytest.mark.slow
def test_thousand_domains_leave_nothing_behind(emu_host: HostStatus, tmp_path: Path) -> None:
    hv = open_hypervisor(run_dir=emu_host.run_dir)
    path = str(tmp_path / "leak.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(30)
    try:
        for n in range(WARMUP):
            cycle(hv, listener, path, n)
        before = snapshot(hv, emu_host)
        started = time.monotonic()
        for n in range(WARMUP, WARMUP + DOMAINS):
            cycle(hv, listener, path, n)
        elapsed = time.monotonic() - started
        after = snapshot(hv, emu_host)
    finally:
        listener.close()
        hv.close()
    print(f"\n{DOMAINS} domains in {elapsed:.1f} s ({elapsed / DOMAINS * 1000:.1f} ms each)")
    print(f"before: {before}\nafter:  {after}")
    exact = [k for k in before if not k.endswith("rss_kb")]
    assert {k: after[k] for k in exact} == {k: before[k] for k in exact}
    assert after["domain_processes"] == 0 and after["xenstore_domains"] == []
    assert after["hv_domain_memfds"] == 0  # only dom0's RAM and grant table remain
    # The Python heaps may settle a little; a leak of one page per domain would be 4 MB.
    assert after["hv_rss_kb"] - before["hv_rss_kb"] < 3000
    assert after["xs_rss_kb"] - before["xs_rss_kb"] < 3000
