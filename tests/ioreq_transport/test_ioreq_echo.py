"""The echo device served through ioreqs to an HVM guest process on emu: virtio-pci with
MSI-X (pirq-carrying MSIs to event channels), virtio-pci with INT#x, and virtio-mmio
with its GSI; split then packed rings with a device reset between them; a configuration
change interrupt; every buffer checked byte for byte in the guest."""

from __future__ import annotations

import pytest
from ioreq_support import BUFFERS, LABEL, RINGS, ROUNDS, SCAN_MISSES, run_echo

from xenvirtio.hv.api import Hypervisor
from xenvirtio.transport.events import MsiMessage
from xenvirtio.transport.ioreq import HostThread, msi_pirq
from xenvirtio.transport.ioreq.dispatch import IoreqStats


@pytest.mark.parametrize("kind", ["pci-msix", "pci-intx", "mmio"])
def test_echo_through_ioreqs(hv: Hypervisor, dm: HostThread, kind: str) -> None:
    served, result = run_echo(hv, dm, kind)
    stats: IoreqStats = served.guest.dispatcher.stats
    rounds = len(RINGS) * ROUNDS
    assert result["echoed"] == rounds * BUFFERS
    assert result["label"] == LABEL  # read after the configuration interrupt
    assert result["interrupts"] == rounds + 1  # one per round, one for the config change
    assert result["spurious"] == 0
    assert stats.device_errors == stats.refused == 0
    assert stats.activations == len(RINGS)
    assert served.echo.resets >= len(RINGS)  # between the rings, and at the end
    assert stats.kicks >= rounds
    served_ioreqs = stats.pci_config + stats.copy
    misses = SCAN_MISSES if kind.startswith("pci") else 0
    assert served_ioreqs == result["accesses"] - misses  # each access: one ioreq
    if kind == "pci-msix":
        msis = [e for e in served.events if isinstance(e, MsiMessage)]
        assert stats.line_changes == 0 and len(msis) == stats.msis >= rounds + 1
        # every message names a pirq the guest bound (Xen's vector-0 encoding), above 255
        assert {msi_pirq(m.address, m.data) for m in msis} <= set(result["pirqs"])
        assert min(result["pirqs"]) > 0xFF and result["msi_delivered"] == len(msis)
    else:
        assert stats.msis == 0
        assert stats.line_changes >= 2 * (rounds + 1)  # raised, then dropped by the ack
        assert result["lines"] == rounds + 1
    assert stats.bar_maps == (1 if kind.startswith("pci") else 0)
    assert served.guest.closed
