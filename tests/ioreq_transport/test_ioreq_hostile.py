"""One device-model host serves two HVM guests at once; one of them is hostile (random
configuration and BAR accesses, BARs moved onto claimed windows, scribbled rings, queues
outside its RAM). The other keeps echoing correctly the whole time, every access of the
hostile guest is answered, and the host never drops a guest."""

from __future__ import annotations

import dataclasses
from typing import Any

from ioreq_support import ECHO_KERNEL, MMIO_BASE, MMIO_GSI, PCI_SLOT, hvm_guest, report, wait_exit

from xenvirtio.hv.api import Hypervisor
from xenvirtio.testing.echo_device import EchoDevice
from xenvirtio.transport.ioreq import DeviceModelHost, GuestServer, HostThread
from xenvirtio.transport.ioreq.dispatch import IoreqStats

HOSTILE_KERNEL = "xenvirtio.testing.ioreq_guest_hostile:hostile_kernel"
HOSTILE_SECONDS = 3.0


def serve_both(host: DeviceModelHost, domid: int) -> GuestServer:
    """The same device layout for each guest: echo at 00:04.0 and at the mmio window."""
    guest = host.add_guest(domid)
    guest.add_pci(EchoDevice(), slot=PCI_SLOT)
    guest.add_mmio(EchoDevice(), base=MMIO_BASE, gsi=MMIO_GSI)
    guest.enable()
    return guest


def snapshot(dm: HostThread, guest: GuestServer) -> IoreqStats:
    return dm.call(lambda: dataclasses.replace(guest.dispatcher.stats))


GOOD_ARGS = {
    "kind": "pci-msix",
    "rings": ["split", "packed"],
    "rounds": 10,
    "duration": HOSTILE_SECONDS,  # keeps echoing as long as the hostile guest runs
    "buffers": 8,
    "seed": 5,
    "base": MMIO_BASE,
    "gsi": MMIO_GSI,
}
BAD_ARGS = {"seed": 1234, "duration": HOSTILE_SECONDS, "base": MMIO_BASE}


def test_hostile_guest_does_not_disturb_its_neighbour(hv: Hypervisor, dm: HostThread) -> None:
    with (
        hvm_guest(hv, "hostile", HOSTILE_KERNEL, BAD_ARGS) as bad,
        hvm_guest(hv, "neighbour", ECHO_KERNEL, GOOD_ARGS) as good,
    ):
        bad_server = dm.call(serve_both, dm.host, bad)
        good_server = dm.call(serve_both, dm.host, good)
        hv.domctl.unpause(bad)
        hv.domctl.unpause(good)
        wait_exit(hv, good)
        wait_exit(hv, bad)
        good_result, bad_result = report(hv, good, "result"), report(hv, bad, "result")
        assert dm.call(lambda: sorted(dm.host.guests)) == sorted([bad, good])
        assert dm.host.dropped == {}
        check_neighbour(good_result, snapshot(dm, good_server))
        check_hostile(bad_result, snapshot(dm, bad_server))
        dm.call(dm.host.remove_guest, bad)
        dm.call(dm.host.remove_guest, good)
    # they ran side by side
    assert bad_result["start"] < good_result["end"] and good_result["start"] < bad_result["end"]
    assert good_result["end"] - good_result["start"] >= HOSTILE_SECONDS


def check_neighbour(result: dict[str, Any], stats: IoreqStats) -> None:
    """Every buffer came back right; nothing odd happened on its server."""
    assert result["rounds"] >= 2 * 10 and result["spurious"] == 0
    assert result["echoed"] == result["rounds"] * 8
    assert stats.refused == stats.device_errors == stats.needs_reset == 0
    assert stats.map_failures == 0


def check_hostile(result: dict[str, Any], stats: IoreqStats) -> None:
    """Every access was answered, and the attacks reached the device model's defences."""
    assert result.get("timeouts", 0) == 0, result
    assert result["ok"] > 100 and result["accesses"] > 1000, result
    assert stats.pci_config + stats.copy > 1000
    assert stats.needs_reset > 0  # scribbled rings, queues outside its RAM
    assert stats.map_failures > 0  # BAR 0 moved onto its own virtio-mmio window
    assert stats.bar_maps > 1 and stats.bar_unmaps > 0
    assert stats.device_errors == 0  # no device model raised: all was handled
