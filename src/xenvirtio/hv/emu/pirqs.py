"""A domain's pirqs as the hypervisor keeps them (pure: no I/O).

A PV-on-HVM guest takes a pirq per MSI (``PHYSDEVOP_get_free_pirq``, MAP_PIRQ_TYPE_MSI:
handed out from the top, as Xen's ``get_free_pirq`` does) and maps GSIs to pirqs
(``PHYSDEVOP_map_pirq``, MAP_PIRQ_TYPE_GSI: the lowest free pirq from 16, or the one the
GSI has already), then binds each pirq to an event channel (``EVTCHNOP_bind_pirq``).
An MSI that names the pirq, or the GSI's level rising, raises that channel.

Line levels follow Xen's ``hvm_pci_intx_assert`` / ``hvm_gsi_assert``: each source (a
PCI function's pin, a GSI set directly) is counted once while high, and the GSI fires
when its count goes from 0 to 1.
"""

from __future__ import annotations

import errno
from collections.abc import Hashable

from xenvirtio.hv.api.errors import HypervisorError

NR_PIRQS = 1024  # the pirq space of an emu HVM domain
NR_IRQS_GSI = 48  # Xen's HVM IO-APIC pins: GSI pirqs below, MSI pirqs above
FIRST_GSI_PIRQ = 16  # 0..15: the legacy ISA IRQs


class PirqTable:
    """pirq -> GSI (None for an MSI pirq), plus the level of every GSI source."""

    def __init__(self) -> None:
        self.mapped: dict[int, int | None] = {}
        self.gsi_pirq: dict[int, int] = {}
        self._high: set[Hashable] = set()
        self._count: dict[int, int] = {}

    def get_free_pirq(self) -> int:
        for pirq in range(NR_PIRQS - 1, NR_IRQS_GSI - 1, -1):
            if pirq not in self.mapped:
                self.mapped[pirq] = None
                return pirq
        raise HypervisorError(errno.ENOSPC, "no free pirq")

    def map_gsi(self, gsi: int) -> int:
        if gsi in self.gsi_pirq:
            return self.gsi_pirq[gsi]
        if not 0 <= gsi < NR_IRQS_GSI:
            raise HypervisorError(errno.EINVAL, f"GSI {gsi} outside 0..{NR_IRQS_GSI - 1}")
        for pirq in range(FIRST_GSI_PIRQ, NR_IRQS_GSI):
            if pirq not in self.mapped:
                self.mapped[pirq] = gsi
                self.gsi_pirq[gsi] = pirq
                return pirq
        raise HypervisorError(errno.ENOSPC, "no free GSI pirq")

    def unmap(self, pirq: int) -> None:
        if pirq not in self.mapped:
            raise HypervisorError(errno.EINVAL, f"pirq {pirq} is not mapped")
        gsi = self.mapped.pop(pirq)
        if gsi is not None:
            del self.gsi_pirq[gsi]

    def msi_pirq_ok(self, pirq: int) -> bool:
        """May an MSI name ``pirq`` (Xen: ``map_domain_emuirq_pirq`` takes any pirq of
        the domain's range that is not a GSI's)?"""
        return 0 < pirq < NR_PIRQS and self.mapped.get(pirq) is None

    def set_level(self, source: Hashable, gsi: int, level: int) -> bool:
        """Record ``source``'s level on ``gsi``; True when the GSI just rose."""
        if level and source not in self._high:
            self._high.add(source)
            self._count[gsi] = self._count.get(gsi, 0) + 1
            return self._count[gsi] == 1
        if not level and source in self._high:
            self._high.discard(source)
            self._count[gsi] -= 1
        return False
