"""What code running *inside* a domain gets from the hypervisor (a guest kernel's view).

Guest drivers reach their own RAM, write their own grant table (Linux's
``gnttab_grant_foreign_access``), make I/O accesses that the hypervisor turns into
ioreqs for a device model (a vCPU touching MMIO, I/O ports or PCI config space) and
receive the interrupts a device model injects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from xenvirtio.hv.api.hypervisor import Hypervisor
    from xenvirtio.xenstore.channel import RingChannel


@dataclass(frozen=True)
class StartInfo:
    """What the domain builder tells a new domain (``start_info`` / HVM params)."""

    domid: int
    name: str
    type: str
    nr_pages: int
    vcpus: int
    store_gfn: int | None
    store_evtchn: int | None


class GrantTableFront(Protocol):
    """The domain's own grant table (Linux ``drivers/xen/grant-table.c`` API)."""

    def alloc_grant_references(self, count: int) -> list[int]:
        """``gnttab_alloc_grant_references``: reserve free refs for this caller."""
        ...

    def free_grant_references(self, refs: Sequence[int]) -> None: ...

    def grant_foreign_access_ref(self, ref: int, domid: int, frame: int, readonly: bool) -> None:
        """Write entry ``ref``: frame and domid first, then ``GTF_permit_access``."""
        ...

    def end_foreign_access_ref(self, ref: int) -> None:
        """Invalidate entry ``ref``; EBUSY while the grantee has it mapped."""
        ...

    def query_foreign_access(self, ref: int) -> bool:
        """True while the grantee has ``ref`` mapped (GTF_reading | GTF_writing)."""
        ...

    def grant_foreign_access(self, domid: int, frame: int, readonly: bool) -> int:
        """Allocate a ref and grant ``frame`` to ``domid``; returns the ref."""
        ...

    def end_foreign_access(self, ref: int) -> None:
        """End access (EBUSY while mapped) and free the ref."""
        ...


@dataclass(frozen=True)
class IrqEvent:
    """An interrupt a device model raised: ``kind`` is ``"msi"`` (``addr``/``data``),
    ``"irq"`` / ``"isa_irq"`` (``line``/``level``) or ``"intx"`` (``sbdf``, ``line``
    = INTx pin, ``level``)."""

    kind: str
    addr: int = 0
    data: int = 0
    line: int = 0
    level: int = 0
    sbdf: int = 0


class Interrupts(Protocol):
    """The domain's virtual interrupt controller and its pirqs (PHYSDEVOP_*)."""

    def fd(self) -> int:
        """Readable when :meth:`take` has events."""
        ...

    def take(self) -> list[IrqEvent]:
        """Events raised since the last call, oldest first (vector MSIs, and lines no
        pirq was mapped for)."""
        ...

    def get_free_pirq(self) -> int:
        """``PHYSDEVOP_get_free_pirq`` (MAP_PIRQ_TYPE_MSI): a pirq for an MSI, taken
        from the top of the range. Bind it with ``Evtchn.bind_pirq`` and program the
        MSI with the message naming it (``xenvirtio.spec.msi.pirq_msi_message``)."""
        ...

    def map_pirq_gsi(self, gsi: int) -> int:
        """``PHYSDEVOP_map_pirq`` (MAP_PIRQ_TYPE_GSI): the pirq that ``gsi`` rising
        raises from now on (the one it has already, if mapped before)."""
        ...

    def unmap_pirq(self, pirq: int) -> None:
        """``PHYSDEVOP_unmap_pirq``; EBUSY while an event channel is bound to it."""
        ...


class VcpuIo(Protocol):
    """A vCPU's I/O accesses, turned into ioreqs for the device model that claimed them.

    Unclaimed reads return all ones and unclaimed writes are dropped, as on Xen.
    """

    def access(
        self,
        type: int,
        addr: int,
        size: int,
        dir: int,
        data: int = 0,
        *,
        count: int = 1,
        df: bool = False,
        data_is_ptr: bool = False,
        vcpu: int = 0,
        timeout: float = 10.0,
    ) -> int:
        """Issue one ioreq (``IOREQ_TYPE_PIO`` / ``_COPY`` / ``_PCI_CONFIG``, ``IOREQ_READ``
        / ``IOREQ_WRITE``) and wait for ``STATE_IORESP_READY``; returns the data read
        (0 for a write). ETIMEDOUT if the device model does not answer in time.

        A rep (``rep ins/outs/movs``): ``count`` elements at ``addr + i * size``
        (``- i * size`` with ``df``). With ``data_is_ptr``, ``data`` is the guest-physical
        address of the buffer the elements come from or go to (walked the same way; it
        must lie in guest RAM, else EINVAL), and the call returns 0."""
        ...


class Guest(Protocol):
    """The hypervisor as a domain's kernel sees it."""

    @property
    def start_info(self) -> StartInfo: ...

    @property
    def hypervisor(self) -> Hypervisor:
        """This domain's own libxen* handles."""
        ...

    @property
    def memory(self) -> memoryview:
        """Guest RAM: frame ``gfn`` is at offset ``gfn * 4096``."""
        ...

    @property
    def grant_table(self) -> GrantTableFront: ...

    @property
    def vcpu_io(self) -> VcpuIo: ...

    @property
    def interrupts(self) -> Interrupts: ...

    @property
    def domid(self) -> int: ...

    def alloc_pages(self, count: int) -> list[int]:
        """Free guest frames for this caller's use (gfns)."""
        ...

    def free_pages(self, gfns: Sequence[int]) -> None: ...

    def decrease_reservation(
        self, gfns: Sequence[int], *, vcpu: int = 0, timeout: float = 10.0
    ) -> None:
        """``XENMEM_decrease_reservation`` (ballooning frames out: their contents go).
        Like Xen, the hypervisor then sends ``IOREQ_TYPE_INVALIDATE`` to every enabled
        ioreq server of the domain (``ioreq_signal_mapcache_invalidate``) and returns
        once each answered; ETIMEDOUT if one does not within ``timeout`` s."""
        ...

    def store_channel(self) -> RingChannel:
        """This domain's end of its XenStore ring (page ``store_gfn``, ``store_evtchn``)."""
        ...

    def close(self) -> None: ...
