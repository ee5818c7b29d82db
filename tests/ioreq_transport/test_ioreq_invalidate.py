"""IOREQ_TYPE_INVALIDATE, as Xen raises it: after the guest gives frames back
(``XENMEM_decrease_reservation``) every *enabled* ioreq server of the domain gets one
(``ioreq_signal_mapcache_invalidate``) and answers it before the guest's call returns.
The guest RAM mapcache drops the buckets nothing holds a view of, keeps the ones the
rings live in, and the device keeps working."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from ioreq_support import MMIO_BASE, MMIO_GSI

from xenvirtio.hv.api import Hypervisor
from xenvirtio.hv.emu import attach_guest
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.mem.flat import FlatMemory
from xenvirtio.runtime import open_hypervisor
from xenvirtio.spec.grant_table import XEN_PAGE_SIZE
from xenvirtio.testing.echo_device import ECHO_DEVICE_ID, EchoDevice
from xenvirtio.testing.ioreq_guest import EchoSession, contiguous_pages, open_device
from xenvirtio.transport.ioreq import (
    DeviceModelHost,
    GuestIrqRouter,
    GuestServer,
    HostThread,
    IoreqStats,
)


def serve(host: DeviceModelHost, domid: int) -> GuestServer:
    guest = host.add_guest(domid)
    guest.add_mmio(EchoDevice(), base=MMIO_BASE, gsi=MMIO_GSI)
    guest.enable()
    return guest


@contextmanager
def other_server(emu_host: HostStatus, domid: int, enabled: bool) -> Iterator[HostThread]:
    """A second device model with an ioreq server of its own for ``domid``."""
    hv = open_hypervisor(run_dir=emu_host.run_dir)
    runner = HostThread(hv)
    try:
        server = runner.call(runner.host.add_guest, domid)
        if enabled:
            runner.call(server.enable)
        yield runner
    finally:
        runner.close()
        hv.close()


def stats_of(runner: HostThread, domid: int) -> IoreqStats:
    return runner.call(lambda: dataclasses.replace(runner.host.guests[domid].dispatcher.stats))


def test_decrease_reservation_invalidates_every_enabled_server(
    hv: Hypervisor, dm: HostThread, emu_host: HostStatus
) -> None:
    domid = hv.domctl.create(16, 1, "hvm", name="invalidate")
    guest = attach_guest(emu_host.run_dir, domid)  # this thread is the guest's vCPU
    router = GuestIrqRouter.of_guest(guest)
    try:
        server = dm.call(serve, dm.host, domid)
        ram = server.ram
        dev = open_device(
            guest,
            router,
            {"kind": "mmio", "base": MMIO_BASE, "gsi": MMIO_GSI, "device_id": ECHO_DEVICE_ID},
        )
        session = EchoSession(
            dev, FlatMemory(buffer=guest.memory), router, contiguous_pages(guest, 24), seed=1
        )
        session.bring_up("split", key=7)
        session.round(4)
        far_gfn = ram.nr_pages - 300  # a bucket no ring or buffer uses
        far = far_gfn * XEN_PAGE_SIZE
        guest.memory[far : far + 4] = b"old!"
        assert dm.call(ram.read, far, 4) == b"old!"
        buckets, maps = dm.call(lambda: (ram.mapped_buckets, ram.maps))
        assert buckets >= 2 and stats_of(dm, domid).invalidate == 0

        with (
            other_server(emu_host, domid, True) as second,
            other_server(emu_host, domid, False) as disabled,
        ):
            guest.decrease_reservation([far_gfn])  # returns once every server answered
            assert stats_of(second, domid).invalidate == 1
            assert stats_of(disabled, domid).invalidate == 0  # Xen skips disabled servers

        stats = stats_of(dm, domid)
        assert stats.invalidate == 1 and ram.invalidations == 1
        assert stats.refused == stats.device_errors == 0
        assert ram.mapped_buckets == buckets - 1  # the ring buckets are locked: kept
        assert bytes(guest.memory[far : far + 4]) == bytes(4)  # the frame's contents went
        session.round(4)  # the device still reaches its rings and buffers
        guest.memory[far : far + 4] = b"new!"
        assert dm.call(ram.read, far, 4) == b"new!"  # mapped again, on demand
        assert ram.maps == maps + 1
        assert session.echoed == 8
        dev.drv.reset()
    finally:
        dm.call(dm.host.remove_guest, domid)
        router.close()
        guest.close()
        hv.domctl.destroy(domid)
