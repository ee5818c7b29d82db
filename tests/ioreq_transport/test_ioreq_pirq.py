"""Interrupts to a PV-on-HVM guest on emu, as Xen routes them: an MSI naming a pirq the
guest bound raises that event channel (``hvm_inject_msi``), a GSI the guest mapped to a
pirq raises it on the rising level, a vector MSI goes to the interrupt controller, and
the guest's `GuestIrqRouter` runs the right handlers."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from xenvirtio.hv.api import Hypervisor, HypervisorError
from xenvirtio.hv.emu import EmuGuest, attach_guest
from xenvirtio.hv.emu.host import HostStatus
from xenvirtio.spec.event_channel import EVTCHNSTAT_pirq
from xenvirtio.spec.msi import pirq_msi_message
from xenvirtio.spec.pci import pci_bdf
from xenvirtio.transport.ioreq import GuestIrqRouter


@pytest.fixture
def hvm(hv: Hypervisor, emu_host: HostStatus) -> Iterator[tuple[int, EmuGuest]]:
    domid = hv.domctl.create(16, 1, "hvm", name="pirq")
    guest = attach_guest(emu_host.run_dir, domid)
    try:
        yield domid, guest
    finally:
        guest.close()
        hv.domctl.destroy(domid)


def test_msi_pirqs_reach_their_event_channels(hv: Hypervisor, hvm: tuple[int, EmuGuest]) -> None:
    domid, guest = hvm
    router = GuestIrqRouter.of_guest(guest)
    try:
        route = router.msi_route()
        config, queue = route(0), route(1)
        assert sorted(route.pirqs.values()) == [1022, 1023]  # from the top, as Xen does
        status = router.evtchn.status(route.ports[0])
        assert status.state == EVTCHNSTAT_pirq
        hv.devicemodel.inject_msi(domid, *config)
        assert router.pump(5.0) == 1  # before the driver exists: kept
        got: list[tuple[int, int]] = []
        route.set_handler(lambda a, d: got.append((a, d)))
        assert got == [config]
        vector: list[int] = []
        router.bind_vector(0x41, lambda a, d: vector.append(d))
        hv.devicemodel.inject_msi(domid, *pirq_msi_message(500))  # nobody bound: dropped
        hv.devicemodel.inject_msi(domid, *queue)
        hv.devicemodel.inject_msi(domid, 0xFEE0_0000, 0x41)  # a vector: the controller
        assert router.wait_for(lambda: len(got) == 2 and vector == [0x41], 5.0)
        assert got == [config, queue] and router.counts.msi == 2
        assert router.counts.vector_msi == 1 and router.counts.spurious == 0
        with pytest.raises(HypervisorError) as err:
            hv.devicemodel.inject_msi(domid, 0xFEE0_0000, 0x700)  # vector 0, pirq 0
        assert err.value.errno == errno.ERANGE
        with pytest.raises(HypervisorError) as err:
            guest.interrupts.unmap_pirq(route.pirqs[0])  # still bound
        assert err.value.errno == errno.EBUSY
        with pytest.raises(HypervisorError) as err:
            router.evtchn.bind_pirq(700)  # never taken or mapped
        assert err.value.errno == errno.EINVAL
        route.release()
        hv.devicemodel.inject_msi(domid, *queue)
        assert router.pump(0.2) == 0 and got == [config, queue]
        assert guest.interrupts.get_free_pirq() == 1023  # given back
    finally:
        router.close()


def test_gsis_mapped_to_pirqs_fire_on_the_rising_level(
    hv: Hypervisor, hvm: tuple[int, EmuGuest]
) -> None:
    domid, guest = hvm
    router = GuestIrqRouter.of_guest(guest)
    try:
        lines: list[str] = []
        assert router.bind_pci_intx(pci_bdf(0, 4, 0), 0, lambda: lines.append("pci")) == 32
        router.bind_gsi(32, lambda: lines.append("shared"))  # same line, same port
        router.bind_gsi(33, lambda: lines.append("mmio"))
        assert guest.interrupts.map_pirq_gsi(32) == guest.interrupts.map_pirq_gsi(32)
        for level in (1, 1, 0, 1):  # two rising edges of 00:04.0's INTA
            hv.devicemodel.set_pci_intx_level(domid, 0, 0, 4, 0, level)
            router.pump(0.5)
        hv.devicemodel.set_irq_level(domid, 33, 1)
        hv.devicemodel.set_pci_intx_level(domid, 0, 0, 4, 1, 1)  # INTB: GSI 33 again, held
        assert router.wait_for(lambda: lines.count("mmio") == 1, 5.0)
        router.pump(0.2)
        assert lines == ["pci", "shared", "pci", "shared", "mmio"]
        assert router.counts.lines == 3 and router.counts.msi == 0
        hv.devicemodel.set_irq_level(domid, 9, 1)  # nobody mapped GSI 9: the controller
        assert router.wait_for(lambda: router.counts.spurious == 1, 5.0)
    finally:
        router.close()
