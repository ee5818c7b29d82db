"""Helpers for the ioreq transport tests: HVM guests running the kernels of
`xenvirtio.testing.ioreq_guest`, their reports in XenStore, and clean-up checks."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from xenvirtio.hv.api import DomainState, Hypervisor, HypervisorError
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.testing.hv_harness import process_alive, wait_until
from xenvirtio.testing.ioreq_guest import STORE_DIR
from xenvirtio.transport.events import TransportEvent
from xenvirtio.transport.ioreq import DeviceModelHost, GuestServer, HostThread
from xenvirtio.transport.ioreq.dispatch import MmioSlot, PciSlot

ECHO_KERNEL = "xenvirtio.testing.ioreq_guest:echo_kernel"
MMIO_BASE = 0x0200_0000  # GUEST_VIRTIO_MMIO_BASE
MMIO_GSI = 33  # GUEST_VIRTIO_MMIO_SPI_FIRST
PCI_SLOT = 4


def report(hv: Hypervisor, domid: int, key: str) -> Any:
    assert hv.store is not None
    path = f"/local/domain/{domid}/{STORE_DIR}/{key}"
    return json.loads(hv.store.read(path)) if hv.store.exists(path) else None


def wait_report(hv: Hypervisor, domid: int, key: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = report(hv, domid, key)
        if value is not None:
            return value
        check_alive(hv, domid)
        time.sleep(0.02)
    raise AssertionError(f"domain {domid} never reported {key}")


def check_alive(hv: Hypervisor, domid: int) -> None:
    info = hv.domctl.info(domid)
    if info.state is DomainState.SHUTDOWN:
        raise AssertionError(f"domain {domid} ended early: {report(hv, domid, 'error')}")


def wait_exit(hv: Hypervisor, domid: int, timeout: float = 60.0) -> int:
    """The guest kernel's exit code; its traceback in the failure message."""
    done = wait_until(lambda: hv.domctl.info(domid).state is DomainState.SHUTDOWN, timeout)
    assert done, f"domain {domid} still running after {timeout} s"
    code = hv.domctl.info(domid).exit_code
    assert code == 0, f"domain {domid} exited {code}: {report(hv, domid, 'error')}"
    return code


@contextmanager
def hvm_guest(
    hv: Hypervisor, name: str, kernel: str, args: dict[str, Any], memory_mb: int = 16
) -> Iterator[int]:
    """A paused HVM domain running ``kernel`` with ``args``; destroyed afterwards, and
    its process must be gone."""
    domid = hv.domctl.create(
        memory_mb, 1, "hvm", name=name, kernel=kernel, cmdline=json.dumps(args)
    )
    pid = hv.domctl.info(domid).pid
    try:
        yield domid
    finally:
        hv.domctl.destroy(domid)
        assert wait_until(lambda: not process_alive(pid)), f"domain {domid} process left"
        try:
            hv.domctl.info(domid)
        except HypervisorError:
            pass
        else:
            raise AssertionError(f"domain {domid} survived destroy")


def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    assert wait_until(predicate, timeout), what


ROUNDS, BUFFERS, RINGS = 3, 8, ["split", "packed"]
LABEL = 0x1122_3344_5566_7788
SCAN_MISSES = 31  # bus 0 slots firmware probes that nobody claims: never reach us


@dataclasses.dataclass
class Served:
    guest: GuestServer
    echo: EchoDevice
    events: list[TransportEvent]


def serve_echo(host: DeviceModelHost, domid: int, kind: str) -> Served:
    events: list[TransportEvent] = []

    def trace(slot: PciSlot | MmioSlot, event: TransportEvent) -> None:
        events.append(event)

    guest = host.add_guest(domid, trace=trace)
    echo = EchoDevice()
    if kind == "mmio":
        guest.add_mmio(echo, base=MMIO_BASE, gsi=MMIO_GSI)
    else:
        guest.add_pci(echo, slot=PCI_SLOT)
    guest.enable()
    return Served(guest, echo, events)


def run_echo(hv: Hypervisor, dm: HostThread, kind: str) -> tuple[Served, dict[str, Any]]:
    args = {
        "kind": kind,
        "base": MMIO_BASE,
        "gsi": MMIO_GSI,
        "rings": RINGS,
        "rounds": ROUNDS,
        "buffers": BUFFERS,
        "seed": 11,
        "config": True,
    }
    with hvm_guest(hv, f"echo-{kind}", ECHO_KERNEL, args) as domid:
        served = dm.call(serve_echo, dm.host, domid, kind)
        hv.domctl.unpause(domid)
        assert wait_report(hv, domid, "phase") == "config-wait"
        assert dm.call(served.echo.set_label, LABEL)  # from dom0, outside any ioreq
        wait_exit(hv, domid)
        result = report(hv, domid, "result")
        dm.call(dm.host.remove_guest, domid)
    return served, result
