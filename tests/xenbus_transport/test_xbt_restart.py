"""A backend that dies and comes back, and a backend in an unprivileged driver domain."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from xbt_support import BackendProcess, GuestDomain, plug, unplug, wait_state

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.xenbus.client import create_device
from xenvirtio.hv.xenbus.errors import XenbusPathError
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.testing.hv_harness import wait_until
from xenvirtio.transport.xenbus import BackendRunner


@pytest.fixture
def guest(dom0: Hypervisor, run_dir: Path) -> Iterator[GuestDomain]:
    domain = GuestDomain(dom0, run_dir, "restart")
    try:
        yield domain
    finally:
        domain.destroy()


def test_backend_restart_while_connected(
    dom0: Hypervisor, run_dir: Path, guest: GuestDomain
) -> None:
    _, be = plug(dom0, guest.domid)
    backend = BackendProcess(run_dir, be)
    try:
        guest.call("attach", devid=0)
        first = [os.urandom(64) for _ in range(8)]
        assert [
            bytes.fromhex(h) for h in guest.call("echo", payloads=[p.hex() for p in first])
        ] == first
        backend.kill()  # dies Connected, holding mappings and ports
        in_flight = [os.urandom(200) for _ in range(12)]
        ids = guest.call("submit", payloads=[p.hex() for p in in_flight])
        backend = BackendProcess(run_dir, be)  # a new instance starts Closed
        answer = guest.call("collect", timeout=20.0)
        assert answer["recoveries"] >= 1
        assert [bytes.fromhex(answer["results"][str(i)]) for i in ids] == in_flight
        assert wait_state(dom0, be, XenbusState.CONNECTED)
    finally:
        backend.stop()
        unplug(dom0, be)


def test_unprivileged_driver_domain(dom0: Hypervisor, run_dir: Path, guest: GuestDomain) -> None:
    """Grant DMA lets a domU serve the device; guest-physical addresses need privilege."""
    driver_domain = GuestDomain(dom0, run_dir, "driver-domain")
    assert dom0.store is not None
    try:
        for devid, grant_usage in ((0, True), (1, False)):
            _, be = create_device(dom0.store, driver_domain.domid, guest.domid, "virtio", devid)
            driver_domain.call("serve_backend", nodename=str(be), grant_usage=grant_usage)
            if grant_usage:
                guest.call("attach", devid=devid)
                data = [os.urandom(300) for _ in range(10)]
                out = guest.call("echo", payloads=[d.hex() for d in data])
                assert [bytes.fromhex(h) for h in out] == data
                assert driver_domain.call("backend_state", nodename=str(be))["connected"]
                guest.call("close")
            else:  # the connection fails: the device needs a reset, the backend closes
                guest.call("attach", devid=devid)
                assert guest.call("status") & DeviceStatus.DEVICE_NEEDS_RESET
                assert wait_until(
                    lambda be=be: (
                        driver_domain.call("backend_state", nodename=str(be))["state"]
                        in (int(XenbusState.CLOSING), int(XenbusState.CLOSED))
                    )
                )
            unplug(dom0, be)
    finally:
        driver_domain.destroy()


def test_a_backend_never_resurrects_a_removed_directory(
    dom0: Hypervisor, runner: BackendRunner
) -> None:
    gone = "/local/domain/0/backend/virtio/4000/9"
    with pytest.raises(XenbusPathError):
        runner.add(gone, EchoDevice())
    assert gone not in runner.backends
    assert dom0.store is not None and not dom0.store.exists(gone)
