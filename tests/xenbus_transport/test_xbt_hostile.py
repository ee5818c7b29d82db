"""Hostile frontends: the backend fails their device (dev_fatal, or DEVICE_NEEDS_RESET)
and keeps serving a well-behaved frontend in another domain."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from xbt_support import GuestDomain, backend_state, plug, unplug, wait_state

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu import EmuGuest, attach_guest
from xenvirtio.hv.xenbus.paths import BackendPath, error_dir
from xenvirtio.mem.grant_dma import grant_dma_addr
from xenvirtio.spec import virtio as S
from xenvirtio.spec.virtio import DeviceStatus
from xenvirtio.spec.xenbus_state import XenbusState
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.testing.hv_harness import wait_until
from xenvirtio.testing.xenbus_guest import EchoDriver
from xenvirtio.transport.xenbus import BackendRunner, XenbusTransportError, XenbusVirtioFrontend
from xenvirtio.virtio.queue import ring_addrs

GOOD_FEATURES = 1 << S.VIRTIO_F_VERSION_1 | 1 << S.VIRTIO_F_ACCESS_PLATFORM


@pytest.fixture
def healthy(dom0: Hypervisor, run_dir: Path, runner: BackendRunner) -> Iterator[GuestDomain]:
    """A well-behaved guest, connected through its own device on the same runner."""
    domain = GuestDomain(dom0, run_dir, "healthy")
    _, be = plug(dom0, domain.domid)
    try:
        runner.add(str(be), EchoDevice())
        domain.call("attach", devid=0)
        yield domain
    finally:
        domain.destroy()
        runner.remove(str(be))
        unplug(dom0, be)


def still_serves(domain: GuestDomain) -> None:
    data = [os.urandom(257) for _ in range(16)]
    out = domain.call("echo", payloads=[d.hex() for d in data])
    assert [bytes.fromhex(h) for h in out] == data


@pytest.fixture
def hostile(dom0: Hypervisor, run_dir: Path) -> Iterator[EmuGuest]:
    """A domain without a process, driven from here with its own XenStore connection."""
    domid = dom0.domctl.create(16, name="hostile")
    guest = attach_guest(run_dir, domid)
    try:
        yield guest
    finally:
        guest.close()
        dom0.domctl.destroy(domid)


def error_of(dom0: Hypervisor, be: BackendPath) -> str:
    assert dom0.store is not None
    return dom0.store.read(f"{error_dir(str(be))}/error").decode()


def valid_keys(guest: EmuGuest) -> dict[str, str]:
    """A correct setup of one 64-entry split queue: granted pages and an offered port."""
    frames = guest.alloc_pages(2)
    refs = sorted(guest.grant_table.alloc_grant_references(2))
    for ref, frame in zip(refs, frames, strict=True):
        guest.grant_table.grant_foreign_access_ref(ref, 0, frame, False)
    addrs = ring_addrs(False, grant_dma_addr(refs[0]), 64)
    port = guest.hypervisor.evtchn.bind_unbound_port(0)
    return {
        "version": "1",
        "driver-features": f"{GOOD_FEATURES:x}",
        "num-queues": "1",
        "queue-0/size": "64",
        "queue-0/desc": f"{addrs.desc:x}",
        "queue-0/driver": f"{addrs.driver:x}",
        "queue-0/device": f"{addrs.device:x}",
        "queue-0/event-channel": str(port),
    }


Edit = Callable[[dict[str, str]], None]
CASES: dict[str, tuple[Edit, str]] = {
    "good": (lambda k: None, ""),
    "features-not-hex": (lambda k: k.update({"driver-features": "zz"}), "driver-features"),
    "features-0x": (lambda k: k.update({"driver-features": "0x1"}), "driver-features"),
    "no-version-1": (lambda k: k.update({"driver-features": "200000000"}), "refused"),
    "not-offered": (lambda k: k.update({"driver-features": "ffffffffffffffff"}), "refused"),
    "too-many-queues": (lambda k: k.update({"num-queues": "1000"}), "num-queues"),
    "size-too-big": (lambda k: k.update({"queue-0/size": "65536"}), "size"),
    "size-not-power-of-2": (lambda k: k.update({"queue-0/size": "48"}), "activation"),
    "incomplete-queue": (lambda k: k.pop("queue-0/event-channel"), "incomplete"),
    "guest-physical-ring": (lambda k: k.update({"queue-0/desc": "1000"}), "grant-DMA"),
    "ungranted-ring": (
        lambda k: k.update({"queue-0/desc": f"{grant_dma_addr(3000):x}"}),
        "not accessible",
    ),
    "port-not-offered": (lambda k: k.update({"queue-0/event-channel": "4000"}), "event channel"),
    "version-2": (lambda k: k.update({"version": "2"}), "version"),
    "nul-in-value": (lambda k: k.update({"num-queues": "1\0"}), "num-queues"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_garbage_setup_is_fatal_for_that_device_only(
    dom0: Hypervisor,
    runner: BackendRunner,
    healthy: GuestDomain,
    hostile: EmuGuest,
    case: str,
) -> None:
    edit, expected = CASES[case]
    fe, be = plug(dom0, hostile.domid)
    try:
        runner.add(str(be), EchoDevice())
        assert wait_state(dom0, be, XenbusState.INIT_WAIT)
        keys = valid_keys(hostile)
        edit(keys)
        store = hostile.hypervisor.store
        assert store is not None
        with store.transaction() as t:
            for key, value in keys.items():
                t.write(f"{fe}/{key}", value)
            t.write(f"{fe}/state", str(int(XenbusState.INITIALISED)))
        if case == "good":
            assert wait_state(dom0, be, XenbusState.CONNECTED)
        else:
            assert wait_state(dom0, be, XenbusState.CLOSING)
            assert expected in error_of(dom0, be)
            assert runner.backends[str(be)].link is None  # nothing mapped, no port bound
        still_serves(healthy)
    finally:
        runner.remove(str(be))
        unplug(dom0, be)


def test_scribbled_ring_needs_reset(
    dom0: Hypervisor, runner: BackendRunner, healthy: GuestDomain, hostile: EmuGuest
) -> None:
    _, be = plug(dom0, hostile.domid)
    transport = None
    try:
        runner.add(str(be), EchoDevice())
        transport = XenbusVirtioFrontend(hostile, 0, dma_pages=16)
        driver = EchoDriver(transport)
        driver.start()
        assert driver.echo([b"before"]) == [b"before"]
        assert driver.queue is not None and driver.ring is not None
        avail = ring_addrs(False, driver.ring.addr, driver.queue.config.size).driver
        transport.dma.memory.write(avail + 2, (1000).to_bytes(2, "little"))  # avail idx
        transport.notify(0)
        assert wait_until(lambda: transport.get_status() & DeviceStatus.DEVICE_NEEDS_RESET)
        assert dom0.store is not None
        assert dom0.store.read(f"{be}/needs-reset") == b"1"
        assert "needs reset" in error_of(dom0, be)
        assert backend_state(dom0, be) is XenbusState.CONNECTED  # not fatal: resettable
        still_serves(healthy)
        assert driver.echo([b"after"]) == [b"after"]  # the driver resets and recovers
        assert driver.recoveries == 1
        assert dom0.store.read(f"{be}/needs-reset") == b"0"
    finally:
        if transport is not None:
            transport.close()
        runner.remove(str(be))
        unplug(dom0, be)


def test_more_pages_than_max_mapped_pages(
    dom0: Hypervisor, runner: BackendRunner, healthy: GuestDomain, hostile: EmuGuest
) -> None:
    _, be = plug(dom0, hostile.domid)
    transport = None
    try:
        runner.add(str(be), EchoDevice(), max_mapped_pages=8)
        transport = XenbusVirtioFrontend(hostile, 0, dma_pages=8)
        driver = EchoDriver(transport, queue_size=16)
        driver.start()
        assert driver.echo([b"x" * 100]) == [b"x" * 100]
        frames = hostile.alloc_pages(9)  # granted, but beyond the backend's bound
        refs = [hostile.grant_table.grant_foreign_access(0, f, False) for f in frames]
        assert driver.queue is not None
        mem = transport.dma.memory
        driver.queue.add(mem, [], [(grant_dma_addr(r), 16) for r in refs], 999)
        driver.queue.kick_prepare(mem)
        transport.notify(0)
        assert wait_until(lambda: transport.get_status() & DeviceStatus.DEVICE_NEEDS_RESET)
        assert "max-mapped-pages" in error_of(dom0, be)
        still_serves(healthy)
    finally:
        if transport is not None:
            transport.close()
        runner.remove(str(be))
        unplug(dom0, be)


@pytest.mark.parametrize(
    ("key", "value"),
    [("device-features", "0x100000000"), ("max-queues", "0"), ("queue-0/max-size", "65536")],
)
def test_hostile_backend_offer_is_refused_by_the_frontend(
    dom0: Hypervisor, hostile: EmuGuest, key: str, value: str
) -> None:
    """The frontend checks what a backend (maybe a less trusted driver domain) wrote."""
    _, be = plug(dom0, hostile.domid)
    assert dom0.store is not None
    transport = None
    try:
        offer = {"versions": "1", "device-id": "63", "device-features": "100000000"}
        offer |= {"max-queues": "1", "queue-0/max-size": "64", "config": "", "grant-usage": "1"}
        offer |= {"config-generation": "0", "max-mapped-pages": "64", key: value}
        with dom0.store.transaction() as t:
            for k, v in offer.items():
                t.write(f"{be}/{k}", v)
            t.write(f"{be}/state", str(int(XenbusState.INIT_WAIT)))
        transport = XenbusVirtioFrontend(hostile, 0, dma_pages=8, timeout=2.0)
        with pytest.raises(XenbusTransportError, match="bad offer"):
            transport.get_features()
    finally:
        if transport is not None:
            transport.close(timeout=0.5)
        unplug(dom0, be)
