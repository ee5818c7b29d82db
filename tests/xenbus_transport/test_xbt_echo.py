"""End to end on emu: an echo device in dom0, its driver in a domain process."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from xbt_support import GuestDomain, backend_state, plug, unplug, wait_state

from xenvirtio.hv.api import Hypervisor
from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.echo_device import ECHO_CFG_LABEL, ECHO_CFG_XOR_KEY, EchoDevice
from xenvirtio.testing.hv_harness import wait_until
from xenvirtio.transport.xenbus import BackendRunner


@pytest.fixture
def guest(dom0: Hypervisor, run_dir: Path) -> Iterator[GuestDomain]:
    domain = GuestDomain(dom0, run_dir, "echo")
    try:
        yield domain
    finally:
        domain.destroy()


def payloads(count: int) -> list[bytes]:
    sizes = (1, 100, 1500, 4095, 700)
    return [os.urandom(sizes[i % len(sizes)]) for i in range(count)]


def echo(guest: GuestDomain, data: list[bytes]) -> list[bytes]:
    return [bytes.fromhex(h) for h in guest.call("echo", payloads=[d.hex() for d in data])]


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
@pytest.mark.parametrize("grant_usage", [True, False], ids=["grant-dma", "foreign"])
def test_echo_through_xenbus(
    dom0: Hypervisor, runner: BackendRunner, guest: GuestDomain, packed: bool, grant_usage: bool
) -> None:
    _, be = plug(dom0, guest.domid)
    device = EchoDevice()
    try:
        runner.add(str(be), device, grant_usage=grant_usage)
        features = guest.call("attach", devid=0, packed=packed)
        assert bool(features >> S.VIRTIO_F_RING_PACKED & 1) == packed
        assert bool(features >> S.VIRTIO_F_ACCESS_PLATFORM & 1) == grant_usage
        assert not features & (1 << S.VIRTIO_F_NOTIFICATION_DATA | 1 << S.VIRTIO_F_RING_RESET)
        assert backend_state(dom0, be) is XenbusState.CONNECTED
        data = payloads(150)  # more than the 64-entry ring holds at once
        assert echo(guest, data) == data
        assert device.echoed == len(data)
        link = runner.backends[str(be)].link
        assert link is not None and link.params.grant_usage == grant_usage
    finally:
        runner.remove(str(be))
        unplug(dom0, be)


def test_config_change_and_driver_write(
    dom0: Hypervisor, runner: BackendRunner, guest: GuestDomain
) -> None:
    _, be = plug(dom0, guest.domid)
    device = EchoDevice()
    try:
        runner.add(str(be), device)
        guest.call("attach", devid=0)
        before = guest.call("config", offset=ECHO_CFG_LABEL, size=8)
        assert before["data"] == bytes(8).hex()
        assert device.set_label(0x1122334455667788)
        assert guest.call("wait_config", timeout=10.0)
        after = guest.call("config", offset=ECHO_CFG_LABEL, size=8)
        assert bytes.fromhex(after["data"]) == struct.pack("<Q", 0x1122334455667788)
        assert after["generation"] != before["generation"]
        guest.call("write_config", offset=ECHO_CFG_XOR_KEY, data="5a")
        assert device.config.read(ECHO_CFG_XOR_KEY, 1) == b"\x5a"
        assert echo(guest, [b"\x00\x5a\xff"]) == [b"\x5a\x00\xa5"]
        guest.call("write_config", offset=0, data="ffffffff")  # read-only: ignored
        assert device.config.read(0, 4) == struct.pack("<I", device.max_len)
    finally:
        runner.remove(str(be))
        unplug(dom0, be)


def test_reset_and_reconnect(dom0: Hypervisor, runner: BackendRunner, guest: GuestDomain) -> None:
    _, be = plug(dom0, guest.domid)
    device = EchoDevice()
    try:
        runner.add(str(be), device)
        for round_ in range(3):  # each attach probes: reset, renegotiate, new rings
            if round_:
                guest.call("close")
                assert wait_state(dom0, be, XenbusState.CLOSED)
            guest.call("attach", devid=0, packed=bool(round_ % 2))
            data = payloads(10)
            assert echo(guest, data) == data
        assert device.resets >= 2
    finally:
        runner.remove(str(be))
        unplug(dom0, be)


def test_device_needs_reset_recovers(
    dom0: Hypervisor, runner: BackendRunner, guest: GuestDomain
) -> None:
    _, be = plug(dom0, guest.domid)
    device = EchoDevice()
    try:
        runner.add(str(be), device)
        guest.call("attach", devid=0)
        assert device.ctx is not None
        device.ctx.needs_reset("test: the device gave up")
        assert wait_until(lambda: guest.call("status") & DeviceStatus.DEVICE_NEEDS_RESET)
        data = payloads(20)
        assert echo(guest, data) == data  # the driver resets, probes again, resubmits
        assert not guest.call("status") & DeviceStatus.DEVICE_NEEDS_RESET
    finally:
        runner.remove(str(be))
        unplug(dom0, be)
