"""Domains as processes on emu: boot, exit codes, pause, destroy, and the dom0 door."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvirtio.hv.api import PROT_READ, DomainState, GrantError, Hypervisor
from xenvirtio.hv.emu import attach_guest
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.runtime import open_hypervisor
from xenvirtio.testing import hv_kernels
from xenvirtio.testing.hv_harness import EmuHarness, wait_until


@pytest.fixture
def hv(emu_host: HostStatus) -> Iterator[Hypervisor]:
    hv = open_hypervisor(run_dir=emu_host.run_dir)
    yield hv
    hv.close()


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def gone(pid: int) -> bool:
    try:
        return proc_state(pid) == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize(
    ("kernel", "cmdline", "code"), [(hv_kernels.exit_with, "7", 7), (hv_kernels.crash, "x", 1)]
)
def test_kernel_end_is_the_exit_code(
    hv: Hypervisor, kernel: object, cmdline: str, code: int
) -> None:
    domid = hv.domctl.create(4, name=f"exit-{code}", kernel=kernel, cmdline=cmdline)  # type: ignore[arg-type]
    try:
        hv.domctl.unpause(domid)
        assert wait_until(lambda: hv.domctl.info(domid).state is DomainState.SHUTDOWN)
        assert hv.domctl.info(domid).exit_code == code
    finally:
        hv.domctl.destroy(domid)


def test_a_module_runs_as_the_kernel(hv: Hypervisor) -> None:
    kernel = "xenvirtio.testing.hv_module_kernel"
    domid = hv.domctl.create(4, name="module-kernel", kernel=kernel, cmdline="3")
    try:
        hv.domctl.unpause(domid)
        assert wait_until(lambda: hv.domctl.info(domid).state is DomainState.SHUTDOWN)
        assert hv.domctl.info(domid).exit_code == 3 + domid
    finally:
        hv.domctl.destroy(domid)


def test_pause_stops_the_process_and_destroy_kills_it(hv: Hypervisor, emu_host: HostStatus) -> None:
    domid = hv.domctl.create(4, name="spinner", kernel=hv_kernels.spin)
    try:
        pid = hv.domctl.info(domid).pid
        assert pid is not None and pid != os.getpid()
        assert Path(f"/proc/{pid}/stat").exists()
        counter = hv.foreign.map(domid, PROT_READ, [0])
        assert counter[0:8] == bytes(8)  # created paused: the kernel has not started
        hv.domctl.unpause(domid)
        assert wait_until(lambda: counter[0:8] != bytes(8))
        hv.domctl.pause(domid)
        assert wait_until(lambda: proc_state(pid) == "T")
        frozen = counter[0:8]
        assert not wait_until(lambda: counter[0:8] != frozen, timeout=0.2)
        hv.domctl.unpause(domid)
        assert wait_until(lambda: counter[0:8] != frozen)
    finally:
        hv.domctl.destroy(domid)
    assert wait_until(lambda: gone(pid))
    assert counter[0:8] != bytes(8)  # Xen keeps a destroyed domain's mapped pages until unmapped
    counter.unmap()


def test_a_domain_process_cannot_use_the_dom0_socket(hv: Hypervisor, emu_host: HostStatus) -> None:
    domid = hv.domctl.create(
        4, name="knock", kernel=hv_kernels.knock_on_dom0, cmdline=str(emu_host.run_dir)
    )
    try:
        hv.domctl.unpause(domid)
        assert wait_until(lambda: hv.domctl.info(domid).state is DomainState.SHUTDOWN)
        assert hv.domctl.info(domid).exit_code == 0, "a domain process got a dom0 connection"
    finally:
        hv.domctl.destroy(domid)
    assert "refused a dom0 connection" in (emu_host.run_dir / "hv.log").read_text()


def test_process_peers_are_children_of_the_zygote(emu_host: HostStatus) -> None:
    harness = EmuHarness(emu_host.run_dir, "process")
    try:
        peer = harness.peer()
        pid = harness.hv.domctl.info(peer.domid).pid
        assert pid is not None
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid == emu_host.zygote_pid
        assert peer.call("domid") == peer.domid
        harness.destroy_peer(peer)
        assert wait_until(lambda: gone(pid))
    finally:
        harness.close()


def test_a_grant_mapped_when_its_granter_closes_stays_until_unmapped(
    hv: Hypervisor, emu_host: HostStatus
) -> None:
    domid = hv.domctl.create(4, name="closing-granter")
    try:
        guest = attach_guest(emu_host.run_dir, domid)
        (frame,) = guest.alloc_pages(1)
        guest.page(frame)[0:4] = b"kept"
        ref = guest.grant_table.grant_foreign_access(0, frame, readonly=False)
        mapping = hv.gnttab.map_grant_ref(domid, ref, True)
        guest.close()  # the granting kernel goes away while dom0 maps its page
        again = attach_guest(emu_host.run_dir, domid)
        try:
            assert frame not in again.alloc_pages(64)  # not handed out while mapped
            assert mapping[0:4] == b"kept"
            assert again.grant_table.query_foreign_access(ref)
            mapping.unmap()
            assert not again.grant_table.query_foreign_access(ref)
            with pytest.raises(GrantError):  # ended and freed once unmapped
                hv.gnttab.map_grant_ref(domid, ref, False)
            assert frame in again.alloc_pages(64)
        finally:
            again.close()
    finally:
        hv.domctl.destroy(domid)
