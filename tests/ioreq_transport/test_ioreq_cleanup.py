"""Nothing outlives its owner: after a device-model host served guests (one of them
destroyed while still being served) and closed, the hypervisor holds no ioreq server,
port or connection more than before, no domain process is left, and this process has
its descriptors and threads back."""

from __future__ import annotations

import os
import threading

from ioreq_support import ECHO_KERNEL, MMIO_BASE, MMIO_GSI, hvm_guest, run_echo, serve_echo

from xenvirtio.hv.api import DomainState, Hypervisor
from xenvirtio.hv.emu.host import HostStatus, host_status
from xenvirtio.runtime import open_hypervisor
from xenvirtio.testing.hv_harness import wait_until
from xenvirtio.transport.ioreq import HostThread


def counts(emu_host: HostStatus) -> dict[str, object]:
    details = host_status(emu_host.run_dir).details
    return {k: details[k] for k in ("connections", "ports", "ioreq_servers", "fds")}


def test_host_and_guests_leave_nothing(hv: Hypervisor, emu_host: HostStatus) -> None:
    before, fds, threads = (
        counts(emu_host),
        len(os.listdir("/proc/self/fd")),
        threading.active_count(),
    )
    dm_hv = open_hypervisor(run_dir=emu_host.run_dir)
    dm = HostThread(dm_hv)
    try:
        served, result = run_echo(hv, dm, "pci-msix")  # served, then removed
        assert result["echoed"] > 0 and served.guest.closed
        args = {
            "kind": "mmio",
            "base": MMIO_BASE,
            "gsi": MMIO_GSI,
            "rings": ["split"],
            "rounds": 1000,
            "buffers": 4,
            "seed": 2,
        }
        with hvm_guest(hv, "destroyed-while-served", ECHO_KERNEL, args) as domid:
            gone = dm.call(serve_echo, dm.host, domid, "mmio")
            hv.domctl.unpause(domid)
            assert wait_until(lambda: gone.echo.echoed > 0)  # traffic is flowing
            assert hv.domctl.info(domid).state is DomainState.RUNNING
        # the domain went away under the device model: it must cope, then let go
        assert dm.alive
        dm.call(dm.host.remove_guest, domid)
        assert gone.guest.closed and dm.call(lambda: dm.host.guests) == {}
    finally:
        dm.close()
        dm_hv.close()
    assert not dm.alive
    assert wait_until(lambda: counts(emu_host) == before), (counts(emu_host), before)
    assert len(os.listdir("/proc/self/fd")) == fds
    assert threading.active_count() == threads
